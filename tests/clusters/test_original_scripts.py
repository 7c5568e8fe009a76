"""What the original Kindler's own API checks expect, run against Kindler.

From its tests/webui_api_test.sh (status codes and fields; curl sends only
Content-Type, so the token here stands in for a header in ~/.curlrc) and its
webui/tests/api (request and response models).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from clusters.models import Cluster
from tests.conftest import BOTH
from tests.factories import make_cluster, make_registration

pytestmark = pytest.mark.django_db(databases=BOTH)

TOKEN = "token-for-the-original-scripts"


@pytest.fixture
def curl(settings: Any) -> Client:
    """A client that sends what the scripts' curl does, plus the API token."""
    settings.KINDLER_API_TOKEN = TOKEN
    return Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def devops(alias: str) -> Cluster:
    """The cluster every Kindler installation has, on the default ports."""
    return make_cluster(name="devops", http_port=18080, https_port=18443, pf_port=19000)


def send(curl: Client, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body) if body is not None else ""
    return curl.generic(method, path, data, content_type="application/json")


def test_list_clusters_200_is_an_array_with_devops(curl: Client, devops: Cluster) -> None:
    response = send(curl, "GET", "/api/clusters")
    assert response.status_code == 200
    assert [row["name"] for row in response.json()] == ["devops"]


def test_create_cluster_202_with_a_task_id(curl: Client, devops: Cluster) -> None:
    make_registration()
    response = send(curl, "POST", "/api/clusters", {"name": "test-api-4242", "provider": "k3d"})
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["message"]) == (
        "pending",
        "Cluster creation task created for test-api-4242",
    )
    assert send(curl, "GET", f"/api/tasks/{body['task_id']}").status_code == 200


@pytest.mark.parametrize("provider", ["k3d", "kind"])
def test_e2e_creates_of_both_providers_are_accepted_beside_devops(
    curl: Client, devops: Cluster, provider: str
) -> None:
    first = send(
        curl, "POST", "/api/clusters", {"name": f"test-api-{provider}", "provider": provider}
    )
    second = send(
        curl, "POST", "/api/clusters", {"name": f"test-e2e-{provider}", "provider": provider}
    )
    assert (first.status_code, second.status_code) == (202, 202)


def test_get_cluster_detail_200_names_the_cluster(curl: Client, devops: Cluster) -> None:
    response = send(curl, "GET", "/api/clusters/devops")
    assert (response.status_code, response.json()["name"]) == (200, "devops")


def test_delete_devops_403(curl: Client, devops: Cluster) -> None:
    assert send(curl, "DELETE", "/api/clusters/devops").status_code == 403


def test_delete_cluster_202_with_a_task_id(curl: Client, devops: Cluster) -> None:
    make_cluster(name="test-delete-4242")
    response = send(curl, "DELETE", "/api/clusters/test-delete-4242")
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert send(curl, "GET", f"/api/tasks/{response.json()['task_id']}").status_code == 200


def test_get_cluster_status_200_has_a_status(
    curl: Client, devops: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = send(curl, "GET", "/api/clusters/devops/status")
    assert response.status_code == 200
    assert set(response.json()) >= {"name", "status", "nodes_ready", "nodes_total"}


def test_nonexistent_cluster_404(curl: Client, devops: Cluster) -> None:
    assert send(curl, "GET", "/api/clusters/nonexistent-cluster-4242").status_code == 404


def test_delete_nonexistent_cluster_404(curl: Client, devops: Cluster) -> None:
    assert send(curl, "DELETE", "/api/clusters/nonexistent").status_code == 404


def test_create_with_every_field_of_the_models_example(curl: Client, alias: str) -> None:
    body = {
        "name": "new-cluster",
        "provider": "k3d",
        "node_port": 30080,
        "pf_port": 19001,
        "http_port": 18090,
        "https_port": 18443,
        "cluster_subnet": "10.101.0.0/16",
        "register_portainer": True,
        "haproxy_route": True,
        "register_argocd": True,
    }
    response = send(curl, "POST", "/api/clusters", body)
    assert response.status_code == 202
    assert "new-cluster" in response.json()["message"]


def test_create_of_an_existing_cluster_409_says_already_exists(curl: Client, alias: str) -> None:
    body = {
        "name": "existing-cluster",
        "provider": "k3d",
        "node_port": 30080,
        "pf_port": 19001,
        "http_port": 18090,
        "https_port": 18443,
    }
    send(curl, "POST", "/api/clusters", body)
    response = send(curl, "POST", "/api/clusters", body)
    assert response.status_code == 409
    assert response.json() == {"detail": "Cluster existing-cluster already exists"}


@pytest.mark.parametrize("action", ["start", "stop"])
def test_start_and_stop_202_with_a_task_id(curl: Client, devops: Cluster, action: str) -> None:
    response = send(curl, "POST", f"/api/clusters/devops/{action}")
    assert response.status_code == 202
    assert response.json()["message"] == f"Cluster {action} task created for devops"


def test_health_is_healthy_with_service_and_version(curl: Client, alias: str) -> None:
    body = send(curl, "GET", "/api/health").json()
    assert (body["status"], body["service"]) == ("healthy", "kindler")
    assert isinstance(body["version"], str)


def test_config_has_base_domain_and_both_providers(curl: Client, alias: str) -> None:
    body = send(curl, "GET", "/api/config").json()
    assert (body["base_domain"], body["providers"]) == ("localhost", ["kind", "k3d"])
