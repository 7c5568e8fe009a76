"""The JSON API's compatibility contract, auth and errors, on both databases."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clusters import api, drivers, registry
from clusters.models import Cluster, DesiredState, OperationLog, Registration
from clusters.reconciler import Reconciler
from clusters.registry import Heartbeat
from tests.conftest import BOTH
from tests.factories import make_cluster, make_operation, make_registration, make_superuser
from tests.fakes import FakeTools

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


TOKEN = "s3cret-token-for-tests"
CLUSTER_KEYS = [
    "name",
    "provider",
    "host",
    "node_port",
    "pf_port",
    "http_port",
    "https_port",
    "cluster_subnet",
    "register_portainer",
    "haproxy_route",
    "register_argocd",
    "server_ip",
    "status",
    "desired_state",
    "actual_state",
    "last_reconciled_at",
    "reconcile_error",
    "created_at",
    "updated_at",
]


def post_json(client: Client, url: str, body: Any, **headers: str) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json", headers=headers)


def created(client: Client, **body: Any) -> Any:
    return post_json(client, "/api/clusters", body)


def test_list_returns_every_cluster_in_the_original_shape(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", subnet="10.101.0.0/16")
    response = admin_client.get("/api/clusters")
    assert response.status_code == 200
    [row] = response.json()
    assert list(row) == CLUSTER_KEYS
    assert row["name"] == "dev"
    assert row["cluster_subnet"] == "10.101.0.0/16"
    assert row["status"] == row["actual_state"] == "unknown"


@pytest.mark.parametrize(
    ("actual_state", "status"),
    [
        ("running", "running"),
        ("stopped", "stopped"),
        ("creating", "creating"),
        ("deleting", "deleting"),
        ("failed", "error"),
        ("unknown", "unknown"),
        ("absent", "unknown"),
    ],
)
def test_status_is_the_original_web_uis_word_for_the_actual_state(
    alias: str, admin_client: Client, actual_state: str, status: str
) -> None:
    make_cluster(name="dev", actual_state=actual_state)
    listed = admin_client.get("/api/clusters").json()[0]
    shown = admin_client.get("/api/clusters/dev").json()
    assert (listed["status"], shown["status"], shown["actual_state"]) == (
        status,
        status,
        actual_state,
    )


def test_server_ip_is_listed_and_shown(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", server_ip="172.19.0.2")
    listed = admin_client.get("/api/clusters").json()[0]
    shown = admin_client.get("/api/clusters/dev").json()
    assert (listed["server_ip"], shown["server_ip"]) == ("172.19.0.2", "172.19.0.2")


def test_list_is_empty_without_clusters(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/api/clusters")
    assert (response.status_code, response.json()) == (200, [])


def test_create_returns_202_with_the_task_id(alias: str, admin_client: Client) -> None:
    make_registration()
    response = created(admin_client, name="dev", provider="k3d")
    task = OperationLog.objects.get()
    assert response.status_code == 202
    assert response.json() == {
        "task_id": str(task.uid),
        "status": "pending",
        "message": "Cluster creation task created for dev",
    }


def test_create_applies_the_original_defaults(alias: str, admin_client: Client) -> None:
    created(admin_client, name="dev")
    cluster = Cluster.objects.get(name="dev")
    assert (
        cluster.provider,
        cluster.node_port,
        cluster.pf_port,
        cluster.http_port,
        cluster.https_port,
        cluster.register_portainer,
        cluster.haproxy_route,
        cluster.register_argocd,
        cluster.desired_state,
    ) == ("k3d", 30080, 19000, 18080, 18443, True, True, True, DesiredState.PRESENT)


def test_create_stores_every_given_field(alias: str, admin_client: Client) -> None:
    created(
        admin_client,
        name="dev",
        provider="kind",
        node_port=30081,
        pf_port=19001,
        http_port=18081,
        https_port=18444,
        register_portainer=False,
        haproxy_route=False,
        register_argocd=False,
        host="docker-2",
    )
    row = admin_client.get("/api/clusters/dev").json()
    assert {key: row[key] for key in CLUSTER_KEYS[:11]} == {
        "name": "dev",
        "provider": "kind",
        "host": "docker-2",
        "node_port": 30081,
        "pf_port": 19001,
        "http_port": 18081,
        "https_port": 18444,
        "cluster_subnet": None,
        "register_portainer": False,
        "haproxy_route": False,
        "register_argocd": False,
    }


def test_create_maps_cluster_subnet_to_the_subnet(alias: str, admin_client: Client) -> None:
    created(admin_client, name="dev", cluster_subnet="10.101.0.0/16")
    assert Cluster.objects.get(name="dev").subnet == "10.101.0.0/16"


def test_create_refuses_an_existing_name_with_409(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = created(admin_client, name="dev")
    assert response.status_code == 409
    assert response.json() == {"detail": "Cluster dev already exists"}


def test_create_refuses_malformed_json_with_400(alias: str, admin_client: Client) -> None:
    response = admin_client.post("/api/clusters", "{name", content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Request body is not valid JSON: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)"
    }


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, [{"loc": ["body", "name"], "msg": "Field required"}]),
        ([], [{"loc": ["body"], "msg": "Input should be a valid object"}]),
        ({"name": 7}, [{"loc": ["body", "name"], "msg": "Input should be a valid string"}]),
        (
            {"name": "dev", "http_port": "80"},
            [{"loc": ["body", "http_port"], "msg": "Input should be a valid integer"}],
        ),
        (
            {"name": "dev", "pf_port": True},
            [{"loc": ["body", "pf_port"], "msg": "Input should be a valid integer"}],
        ),
        (
            {"name": "dev", "haproxy_route": "yes"},
            [{"loc": ["body", "haproxy_route"], "msg": "Input should be a valid boolean"}],
        ),
        (
            {"name": "Dev_1"},
            [
                {
                    "loc": ["body", "name"],
                    "msg": "Use lower-case letters, digits and dashes, starting and ending "
                    "with a letter or digit (a DNS-1123 label), e.g. dev-1.",
                }
            ],
        ),
        (
            {"name": "dev", "http_port": 80},
            [{"loc": ["body", "http_port"], "msg": "Ports must be between 1024 and 65535."}],
        ),
        (
            {"name": "dev", "node_port": 70000},
            [{"loc": ["body", "node_port"], "msg": "Ports must be between 1024 and 65535."}],
        ),
        (
            {"name": "dev", "provider": "minikube"},
            [{"loc": ["body", "provider"], "msg": "Value 'minikube' is not a valid choice."}],
        ),
        (
            {"name": "dev", "cluster_subnet": "10.0.0.1/16"},
            [
                {
                    "loc": ["body", "cluster_subnet"],
                    "msg": "10.0.0.1/16 is not a valid IPv4 CIDR such as 10.100.0.0/16 "
                    "(10.0.0.1/16 has host bits set).",
                }
            ],
        ),
        (
            {"name": "dev", "provider": "kind", "cluster_subnet": "10.101.0.0/16"},
            [
                {
                    "loc": ["body", "cluster_subnet"],
                    "msg": "A subnet can only be set for k3d clusters; kind assigns its own.",
                }
            ],
        ),
        (
            {"name": "dev", "http_port": 18090, "https_port": 18090},
            [
                {
                    "loc": ["body", "https_port"],
                    "msg": "Port 18090 is already used by this cluster's http_port.",
                }
            ],
        ),
    ],
)
def test_create_refuses_invalid_fields_with_422(
    alias: str, admin_client: Client, body: Any, errors: list[dict[str, Any]]
) -> None:
    response = post_json(admin_client, "/api/clusters", body)
    assert (response.status_code, response.json()) == (422, {"detail": errors})
    assert Cluster.objects.count() == 0


def test_create_refuses_a_port_another_cluster_uses(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", http_port=18090, https_port=18453, pf_port=19010)
    response = created(admin_client, name="qa", http_port=18090)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"loc": ["body", "http_port"], "msg": "Port 18090 is already used by cluster dev."}
        ]
    }


def test_get_returns_one_cluster(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = admin_client.get("/api/clusters/dev")
    assert response.status_code == 200
    assert response.json()["name"] == "dev"


def test_get_an_unknown_cluster_is_404(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/api/clusters/nope")
    assert (response.status_code, response.json()) == (404, {"detail": "Cluster nope not found"})


def test_delete_marks_the_cluster_absent_with_202(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = admin_client.delete("/api/clusters/dev")
    task = OperationLog.objects.get(operation="delete")
    assert response.status_code == 202
    assert response.json() == {
        "task_id": str(task.uid),
        "status": "pending",
        "message": "Cluster deletion task created for dev",
    }
    assert Cluster.objects.get(name="dev").desired_state == DesiredState.ABSENT


def test_delete_an_unknown_cluster_is_404(alias: str, admin_client: Client) -> None:
    response = admin_client.delete("/api/clusters/nope")
    assert (response.status_code, response.json()) == (404, {"detail": "Cluster nope not found"})


def test_delete_devops_is_403(alias: str, admin_client: Client) -> None:
    make_cluster(name="devops")
    response = admin_client.delete("/api/clusters/devops")
    assert response.status_code == 403
    assert response.json() == {"detail": "The devops cluster cannot be deleted."}
    assert Cluster.objects.get(name="devops").desired_state == DesiredState.PRESENT


@pytest.mark.parametrize(
    ("action", "desired", "message"),
    [
        ("stop", DesiredState.STOPPED, "Cluster stop task created for dev"),
        ("start", DesiredState.PRESENT, "Cluster start task created for dev"),
    ],
)
def test_start_and_stop_return_202_with_the_task_id(
    alias: str, admin_client: Client, action: str, desired: str, message: str
) -> None:
    make_cluster(name="dev", desired_state=DesiredState.STOPPED if action == "start" else "present")
    response = admin_client.post(f"/api/clusters/dev/{action}")
    task = OperationLog.objects.get(operation=action)
    assert response.status_code == 202
    assert response.json() == {"task_id": str(task.uid), "status": "pending", "message": message}
    assert Cluster.objects.get(name="dev").desired_state == desired


def test_start_a_cluster_marked_for_deletion_is_409(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", desired_state=DesiredState.ABSENT)
    response = admin_client.post("/api/clusters/dev/start")
    assert response.status_code == 409
    assert response.json() == {"detail": "Cluster dev is marked for deletion"}


def test_stop_an_unknown_cluster_is_404(alias: str, admin_client: Client) -> None:
    response = admin_client.post("/api/clusters/nope/stop")
    assert (response.status_code, response.json()) == (404, {"detail": "Cluster nope not found"})


def test_status_answers_from_the_reconcilers_last_observation(
    alias: str, admin_client: Client, fakes: FakeTools
) -> None:
    cluster = make_cluster(name="dev", reconcile_error="k3d exited 1")
    heartbeat = Heartbeat(providers={"k3d": "v5.7.4"})
    heartbeat.record_observation({"k3d": {"dev": drivers.ClusterStatus("dev", "running", 1, 2)}})
    observed_at = timezone.now() - timedelta(seconds=30)
    Registration.objects.update(observed_at=observed_at)
    response = admin_client.get("/api/clusters/dev/status")
    assert response.status_code == 200
    body = response.json()
    age = body.pop("age_seconds")
    assert body == {
        "name": "dev",
        "status": "running",
        "observed_state": "running",
        "nodes_ready": 1,
        "nodes_total": 2,
        "host": cluster.host,
        "observed_at": observed_at.isoformat(),
        "observation_error": None,
        "portainer_status": "unknown",
        "argocd_status": "unknown",
        "error_message": "k3d exited 1",
    }
    assert 30.0 <= age < 40.0
    # The web worker ran no provider CLI to answer.
    assert fakes.calls() == []


def test_status_says_unknown_and_observed_absent_for_a_cluster_the_provider_does_not_list(
    alias: str, admin_client: Client
) -> None:
    make_cluster(name="dev")
    Heartbeat(providers={"k3d": "v5.7.4"}).record_observation({"k3d": {}})
    body = admin_client.get("/api/clusters/dev/status").json()
    assert (body["status"], body["observed_state"], body["nodes_total"]) == ("unknown", "absent", 0)
    assert body["observation_error"] is None


def test_status_is_unknown_before_any_reconciler_observed(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    body = admin_client.get("/api/clusters/dev/status").json()
    assert (body["status"], body["observed_at"], body["age_seconds"]) == ("unknown", None, None)
    assert body["observation_error"] == (
        f"No reconciler on {cluster.host} has observed its clusters yet."
    )


@pytest.mark.parametrize(
    "output", ["[null]", '[{"serversCount": 1}]', '[{"name": "dev", "serversRunning": 1e400}]']
)
def test_status_is_unknown_when_k3d_prints_what_it_never_does(
    alias: str, admin_client: Client, monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    make_cluster(name="dev", desired_state="stopped", actual_state="stopped")
    monkeypatch.setattr("clusters.drivers.k3d.capture", lambda argv: output)
    Reconciler(heartbeat=Heartbeat(providers={"k3d": "v5.7.4"})).run_once()
    body = admin_client.get("/api/clusters/dev/status").json()
    assert (body["status"], body["nodes_total"]) == ("unknown", 0)
    assert body["observation_error"].startswith("k3d cluster list -o json printed ")


def test_status_of_an_unknown_cluster_is_404(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/api/clusters/nope/status")
    assert (response.status_code, response.json()) == (404, {"detail": "Cluster nope not found"})


def test_operations_are_listed_newest_first_up_to_limit(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    for operation in ("create", "stop", "start"):
        make_operation(cluster, operation=operation)
    response = admin_client.get("/api/clusters/dev/operations?limit=2")
    assert response.status_code == 200
    assert [entry["operation"] for entry in response.json()] == ["start", "stop"]


def test_operations_outlive_the_cluster(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    make_operation(cluster, operation="delete")
    cluster.delete()
    response = admin_client.get("/api/clusters/dev/operations")
    assert [entry["operation"] for entry in response.json()] == ["delete"]


def test_operations_of_an_unknown_cluster_are_404(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/api/clusters/nope/operations")
    assert (response.status_code, response.json()) == (404, {"detail": "Cluster nope not found"})


@pytest.mark.parametrize("limit", ["0", "-1", "x", "201", "1000", "²", "9" * 5000])
def test_operations_refuse_a_bad_limit_with_422(
    alias: str, admin_client: Client, limit: str
) -> None:
    make_cluster(name="dev")
    response = admin_client.get(f"/api/clusters/dev/operations?limit={limit}")
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"loc": ["query", "limit"], "msg": "Input should be a whole number from 1 to 200"}
        ]
    }


def test_config_lists_providers_defaults_and_port_range(
    alias: str, admin_client: Client, settings: Any
) -> None:
    settings.KINDLER_BASE_DOMAIN = "192.168.51.30.sslip.io"
    response = admin_client.get("/api/config")
    assert response.status_code == 200
    assert response.json() == {
        "base_domain": "192.168.51.30.sslip.io",
        "providers": ["kind", "k3d"],
        "default_provider": "k3d",
        "default_node_port": 30080,
        "default_pf_port_range": [19000, 65535],
        "default_http_port_range": [18080, 65535],
        "default_https_port_range": [18443, 65535],
        "defaults": {
            "node_port": 30080,
            "pf_port": 19000,
            "http_port": 18080,
            "https_port": 18443,
            "register_portainer": True,
            "haproxy_route": True,
            "register_argocd": True,
        },
        "port_range": {"min": 1024, "max": 65535},
    }


@pytest.mark.parametrize(
    "url", ["/api/clusters", "/api/clusters/dev", "/api/config", "/api/clusters/dev/operations"]
)
def test_anonymous_requests_get_401_json(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication required: log in, or send Authorization: Bearer"
    }
    assert response["WWW-Authenticate"] == 'Bearer realm="kindler"'


def test_the_api_token_authenticates(client: Client, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = TOKEN
    response = client.get("/api/clusters", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (response.status_code, response.json()) == (200, [])


def test_the_api_token_needs_no_csrf_token_for_writes(settings: Any) -> None:
    settings.KINDLER_API_TOKEN = TOKEN
    client = Client(enforce_csrf_checks=True)
    response = post_json(client, "/api/clusters", {"name": "dev"}, Authorization=f"Bearer {TOKEN}")
    assert response.status_code == 202


def test_a_wrong_token_is_401(client: Client, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = TOKEN
    response = client.get("/api/clusters", headers={"Authorization": "Bearer wrong"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API token"})


@pytest.mark.parametrize("sent", ["", "some-token"])
def test_a_token_sent_when_none_is_configured_says_tokens_are_off(
    client: Client, settings: Any, sent: str
) -> None:
    settings.KINDLER_API_TOKEN = ""
    response = client.get("/api/clusters", headers={"Authorization": f"Bearer {sent}"})
    assert (response.status_code, response.json()) == (
        401,
        {
            "detail": "API tokens are not enabled on this server (KINDLER_API_TOKEN is not set): "
            "log in instead"
        },
    )


def test_a_session_write_without_csrf_token_is_403(admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = post_json(client, "/api/clusters", {"name": "dev"})
    assert response.status_code == 403
    assert response.json() == {"detail": "CSRF check failed: CSRF cookie not set."}
    assert Cluster.objects.count() == 0


def test_a_session_write_with_the_csrf_token_is_accepted(admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    client.get("/")
    token = client.cookies["csrftoken"].value
    response = post_json(client, "/api/clusters", {"name": "dev"}, **{"X-CSRFToken": token})
    assert response.status_code == 202


def test_a_session_read_needs_no_csrf_token(admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.get("/api/clusters").status_code == 200


def test_an_unknown_api_path_is_404_json(admin_client: Client) -> None:
    response = admin_client.get("/api/nothing-here")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found"})


def test_an_unknown_api_path_is_404_json_without_login(client: Client) -> None:
    response = client.post("/api/nothing-here")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found"})


def test_a_wrong_method_is_405_json(admin_client: Client) -> None:
    response = admin_client.put("/api/clusters")
    assert (response.status_code, response.json()) == (405, {"detail": "Method Not Allowed"})
    assert response["Allow"] == "GET, HEAD, POST"


def test_an_unexpected_error_is_500_json(admin_user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any) -> None:
        raise RuntimeError("secret internals")

    make_cluster(name="dev")
    monkeypatch.setattr(registry, "last_observation", explode)
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    response = client.get("/api/clusters/dev/status")
    assert (response.status_code, response.json()) == (500, {"detail": "Internal server error"})


def patch_json(client: Client, url: str, body: Any) -> Any:
    return client.patch(url, json.dumps(body), content_type="application/json")


def test_patch_changes_the_given_fields(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = patch_json(admin_client, "/api/clusters/dev", {"http_port": 18123})
    assert response.status_code == 200
    assert response.json()["http_port"] == 18123
    assert Cluster.objects.get(name="dev").http_port == 18123


def test_patch_with_a_null_subnet_clears_it(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", subnet="10.101.0.0/16")
    response = patch_json(admin_client, "/api/clusters/dev", {"cluster_subnet": None})
    assert response.json()["cluster_subnet"] is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "renamed", "A cluster keeps its name: create a cluster under the other name."),
        (
            "provider",
            "kind",
            "A cluster keeps its provider: delete it and create it again with the other provider.",
        ),
        (
            "host",
            "docker-2",
            "A cluster stays on its Docker host: delete it and create it on the other host.",
        ),
    ],
)
def test_patch_refuses_to_change_what_identifies_the_cluster(
    alias: str, admin_client: Client, field: str, value: str, message: str
) -> None:
    cluster = make_cluster(name="dev", provider="k3d", host="docker-1")
    response = patch_json(admin_client, "/api/clusters/dev", {field: value, "http_port": 18123})
    assert (response.status_code, response.json()) == (
        422,
        {"detail": [{"loc": ["body", field], "msg": message}]},
    )
    assert list(Cluster.objects.values_list("name", "provider", "host", "http_port")) == [
        ("dev", "k3d", "docker-1", cluster.http_port)
    ]


def test_patch_accepts_the_same_name_provider_and_host_again(
    alias: str, admin_client: Client
) -> None:
    make_cluster(name="dev", provider="k3d", host="docker-1")
    body = {"name": "dev", "provider": "k3d", "host": "docker-1", "http_port": 18123}
    response = patch_json(admin_client, "/api/clusters/dev", body)
    assert (response.status_code, response.json()["http_port"]) == (200, 18123)


def test_patch_refuses_invalid_fields_with_422(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", https_port=18090)
    make_cluster(name="qa")
    response = patch_json(admin_client, "/api/clusters/qa", {"http_port": 18090})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"loc": ["body", "http_port"], "msg": "Port 18090 is already used by cluster dev."}
        ]
    }


def test_patch_an_unknown_cluster_is_404(alias: str, admin_client: Client) -> None:
    response = patch_json(admin_client, "/api/clusters/nope", {"http_port": 18123})
    assert (response.status_code, response.json()) == (404, {"detail": "Cluster nope not found"})


def test_create_of_a_taken_name_is_409_whatever_else_is_wrong(
    alias: str, admin_client: Client
) -> None:
    make_cluster(name="dev")
    response = created(admin_client, name="dev", http_port=80)
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "Cluster dev already exists"},
    )


def test_a_repeated_create_is_409_though_its_ports_clash_with_itself(
    alias: str, admin_client: Client
) -> None:
    body = {"name": "dev", "provider": "k3d", "http_port": 18090, "https_port": 18453}
    assert post_json(admin_client, "/api/clusters", body).status_code == 202
    response = post_json(admin_client, "/api/clusters", body)
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "Cluster dev already exists"},
    )
    assert OperationLog.objects.count() == 1


def test_a_create_without_ports_gets_the_lowest_free_ones(alias: str, admin_client: Client) -> None:
    make_cluster(name="devops", http_port=18080, https_port=18443, pf_port=19000)
    make_cluster(name="dev", http_port=18081, https_port=18444, pf_port=19002)
    response = created(admin_client, name="qa", provider="k3d")
    assert response.status_code == 202
    qa = Cluster.objects.get(name="qa")
    assert (qa.node_port, qa.http_port, qa.https_port, qa.pf_port) == (30080, 18082, 18445, 19001)


def test_a_create_fills_in_only_the_ports_it_omits(alias: str, admin_client: Client) -> None:
    make_cluster(name="devops", http_port=18080, https_port=18443, pf_port=19000)
    response = created(admin_client, name="qa", http_port=18200)
    assert response.status_code == 202
    qa = Cluster.objects.get(name="qa")
    assert (qa.http_port, qa.https_port, qa.pf_port) == (18200, 18444, 19001)


def test_a_create_offered_ports_taken_meanwhile_is_offered_free_ones(
    alias: str, admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    offers = iter([{"http_port": 18080, "https_port": 18443, "pf_port": 19000}])

    def taken_first(host: str, real: Any = api.free_host_ports) -> dict[str, int]:
        # The first offer was computed before another request took its ports.
        return next(offers, None) or real(host)

    make_cluster(name="devops", http_port=18080, https_port=18443, pf_port=19000)
    monkeypatch.setattr(api, "free_host_ports", taken_first)
    response = created(admin_client, name="qa")
    assert response.status_code == 202
    qa = Cluster.objects.get(name="qa")
    assert (qa.http_port, qa.https_port, qa.pf_port) == (18081, 18444, 19001)


def test_config_offers_the_lowest_free_ports(alias: str, admin_client: Client) -> None:
    make_cluster(name="devops", http_port=18080, https_port=18443, pf_port=19000)
    body = admin_client.get("/api/config").json()
    assert (
        body["default_http_port_range"],
        body["default_https_port_range"],
        body["default_pf_port_range"],
    ) == ([18081, 65535], [18444, 65535], [19001, 65535])


def test_create_refuses_an_overlapping_subnet(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", subnet="10.101.0.0/16")
    response = created(admin_client, name="qa", cluster_subnet="10.101.128.0/17")
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "cluster_subnet"],
                "msg": "subnet 10.101.128.0/17 overlaps cluster dev",
            }
        ]
    }


def test_patch_refuses_an_overlapping_subnet(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", subnet="10.101.0.0/16")
    make_cluster(name="qa")
    response = admin_client.patch(
        "/api/clusters/qa",
        json.dumps({"cluster_subnet": "10.101.128.0/17"}),
        content_type="application/json",
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "cluster_subnet"],
                "msg": "subnet 10.101.128.0/17 overlaps cluster dev",
            }
        ]
    }
    assert Cluster.objects.get(name="qa").subnet == ""


def test_create_refuses_a_name_ending_in_a_newline(alias: str, admin_client: Client) -> None:
    response = created(admin_client, name="nl\n")
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "name"],
                "msg": "Use lower-case letters, digits and dashes, starting and ending with a "
                "letter or digit (a DNS-1123 label), e.g. dev-1.",
            }
        ]
    }
    assert Cluster.objects.exists() is False


def test_an_unknown_api_path_is_404_json_with_debug_on(client: Client, settings: Any) -> None:
    settings.DEBUG = True
    response = client.get("/api/clusters/dev/nothing")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found"})


def test_create_refuses_a_name_longer_than_63_characters(alias: str, admin_client: Client) -> None:
    response = created(admin_client, name="a" * 64)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "name"],
                "msg": "Cluster names are at most 63 characters (this one has 64).",
            },
            {
                "loc": ["body", "name"],
                "msg": "Ensure this value has at most 63 characters (it has 64).",
            },
        ]
    }


TASK_KEYS = [
    "task_id",
    "status",
    "progress",
    "message",
    "logs",
    "error",
    "created_at",
    "updated_at",
    "completed_at",
]


def test_a_task_is_the_operation_in_the_original_shape(alias: str, admin_client: Client) -> None:
    created(admin_client, name="dev", provider="k3d")
    task = OperationLog.objects.get()
    response = admin_client.get(f"/api/tasks/{task.uid}")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == TASK_KEYS
    assert body == {
        "task_id": str(task.uid),
        "status": "pending",
        "progress": 0,
        "message": "Creating cluster dev",
        "logs": [],
        "error": None,
        "created_at": task.created_at.isoformat(),
        "updated_at": task.created_at.isoformat(),
        "completed_at": None,
    }


def test_a_running_task_reports_the_providers_phase(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev", provider="kind")
    output = 'Creating cluster "dev" ...\n * Ensuring node image (kindest/node:v1.31.0)\n'
    task = make_operation(cluster, status="running", log_output=output)
    body = admin_client.get(f"/api/tasks/{task.uid}").json()
    assert (body["status"], body["progress"], body["logs"]) == (
        "running",
        15,
        ['Creating cluster "dev" ...', " * Ensuring node image (kindest/node:v1.31.0)"],
    )


def test_a_task_outlives_its_cluster(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    task = make_operation(cluster, operation="delete", status="success")
    cluster.delete()
    body = admin_client.get(f"/api/tasks/{task.uid}").json()
    assert (body["status"], body["progress"], body["message"]) == (
        "completed",
        100,
        "Cluster dev deleted",
    )


@pytest.mark.parametrize("task_id", ["9b2f6a52-3c1e-4f7e-9d55-2f0f7f0f7f0f", "reconcile-dev"])
def test_an_unknown_task_is_404_json(alias: str, admin_client: Client, task_id: str) -> None:
    response = admin_client.get(f"/api/tasks/{task_id}")
    assert (response.status_code, response.json()) == (
        404,
        {"detail": f"Task {task_id} not found"},
    )


def test_a_task_needs_authentication(client: Client) -> None:
    response = client.get("/api/tasks/9b2f6a52-3c1e-4f7e-9d55-2f0f7f0f7f0f")
    assert response.status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{"Accept": "text/html,application/xhtml+xml"}, {"X-Requested-With": "XMLHttpRequest"}],
)
def test_a_browser_without_a_session_is_told_where_to_sign_in(
    client: Client, headers: dict[str, str]
) -> None:
    response = client.get("/api/clusters", headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication required: log in, or send Authorization: Bearer",
        "login_url": "/accounts/login/",
    }


def signed_in_with_csrf_cookie(admin_user: Any) -> tuple[Client, str]:
    """Return a client with a session and the CSRF cookie, as after the login page."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    client.get("/api/clusters")
    return client, client.cookies["XSRF-TOKEN"].value


def test_a_session_write_with_the_axios_header_is_accepted(admin_user: Any) -> None:
    client, token = signed_in_with_csrf_cookie(admin_user)
    response = post_json(client, "/api/clusters", {"name": "dev"}, **{"X-XSRF-TOKEN": token})
    assert response.status_code == 202


def test_the_axios_cookie_holds_the_csrf_secret(admin_user: Any) -> None:
    client, token = signed_in_with_csrf_cookie(admin_user)
    assert token == client.cookies["csrftoken"].value
    assert client.cookies["XSRF-TOKEN"]["httponly"] == ""


def test_a_session_write_with_a_wrong_axios_header_is_403(admin_user: Any) -> None:
    client, token = signed_in_with_csrf_cookie(admin_user)
    wrong = token[::-1] if token[::-1] != token else "x" * len(token)
    response = post_json(client, "/api/clusters", {"name": "dev"}, **{"X-XSRF-TOKEN": wrong})
    assert response.status_code == 403
    assert response.json() == {
        "detail": "CSRF check failed: CSRF token from the 'X-Csrftoken' HTTP header incorrect."
    }
    assert Cluster.objects.count() == 0


def test_a_cross_site_write_with_the_axios_header_is_refused(admin_user: Any) -> None:
    client, token = signed_in_with_csrf_cookie(admin_user)
    response = post_json(
        client,
        "/api/clusters",
        {"name": "dev"},
        **{"X-XSRF-TOKEN": token, "Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert response.json() == {
        "detail": "CSRF check failed: Origin checking failed - https://evil.example does not "
        "match any trusted origins."
    }
    assert Cluster.objects.count() == 0


def test_a_same_origin_write_with_the_axios_header_is_accepted(admin_user: Any) -> None:
    client, token = signed_in_with_csrf_cookie(admin_user)
    response = post_json(
        client,
        "/api/clusters",
        {"name": "dev"},
        **{"X-XSRF-TOKEN": token, "Origin": "http://testserver"},
    )
    assert response.status_code == 202


def test_a_session_without_the_csrf_cookie_is_given_one(admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.get("/api/clusters")
    assert response.cookies["XSRF-TOKEN"].value == response.cookies["csrftoken"].value


@pytest.mark.parametrize("port", [99999999999999999999, -99999999999999999999, 2**63, -1])
@pytest.mark.parametrize("field", ["http_port", "https_port", "pf_port", "node_port"])
def test_create_refuses_a_port_out_of_range_with_422(
    alias: str, admin_client: Client, field: str, port: int
) -> None:
    response = created(admin_client, name="dev", **{field: port})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body", field], "msg": "Ports must be between 1024 and 65535."}]
    }
    assert Cluster.objects.count() == 0


def test_update_refuses_a_port_out_of_range_with_422(alias: str, admin_client: Client) -> None:
    dev = make_cluster(name="dev")
    response = admin_client.patch(
        "/api/clusters/dev",
        json.dumps({"http_port": 99999999999999999999}),
        content_type="application/json",
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body", "http_port"], "msg": "Ports must be between 1024 and 65535."}]
    }
    assert Cluster.objects.get().http_port == dev.http_port


def test_a_body_over_the_upload_limit_is_413(
    alias: str, admin_client: Client, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = created(admin_client, name="dev", padding="x" * 1000)
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is larger than 1000 bytes"}
    assert Cluster.objects.count() == 0


def test_json_nested_5000_deep_is_400(alias: str, admin_client: Client) -> None:
    body = '{"name": ' + "[" * 5000 + "]" * 5000 + "}"
    response = admin_client.post("/api/clusters", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "Request body is JSON nested too deeply"}
    assert Cluster.objects.count() == 0


# What kindler.db.backends sends ahead of a statement, in the same round trip.
CARRIED = re.compile(r'^(?:(?:BEGIN|SAVEPOINT "\w+");)+')


def statements(alias: str, send: Any) -> tuple[int, list[str]]:
    """Return the status send() got and the first word of each statement it ran on alias."""
    with CaptureQueriesContext(connections[alias]) as queries:
        response = send()
    words = [CARRIED.sub("", q["sql"]).split()[0].upper() for q in queries]
    return response.status_code, [w for w in words if w not in ("SAVEPOINT", "RELEASE")]


def round_trips(send: Any) -> tuple[int, dict[str, list[str]]]:
    """Return the status send() got and, per alias, each round trip's statements by first word.

    "BEGIN;SELECT" is one round trip that carried a BEGIN ahead of a SELECT.
    """
    captures = {alias: CaptureQueriesContext(connections[alias]) for alias in BOTH}
    with contextlib.ExitStack() as stack:
        for capture in captures.values():
            stack.enter_context(capture)
        response = send()
    return response.status_code, {
        alias: [shape(query["sql"]) for query in capture.captured_queries]
        for alias, capture in captures.items()
    }


def shape(sql: str) -> str:
    times, many, statement = sql.partition(" times: ")
    if many and times.isdigit():
        # An executemany, logged as "<n> times: <sql>": one round trip per row.
        return f"{shape(statement)} x{times}"
    carried = CARRIED.match(sql)
    ahead = carried.group(0).split(";")[:-1] if carried else []
    rest = sql[carried.end() :] if carried else sql
    return ";".join(word.split()[0].upper() for word in [*ahead, rest])


def test_a_create_reads_the_registry_once_and_looks_nothing_else_up(
    alias: str, settings: Any
) -> None:
    make_registration()
    settings.KINDLER_API_TOKEN = TOKEN
    client = Client(headers={"Authorization": f"Bearer {TOKEN}"})
    body = {"name": "dev", "provider": "k3d", "http_port": 18090, "https_port": 18453}
    assert statements(alias, lambda: created(client, **body, pf_port=19001)) == (
        202,
        ["SELECT", "INSERT", "INSERT"],
    )


def test_a_create_with_no_live_reconciler_reads_the_registry_once_too(
    alias: str, settings: Any
) -> None:
    make_registration(host="docker-9", seconds_ago=3600)
    settings.KINDLER_API_TOKEN = TOKEN
    client = Client(headers={"Authorization": f"Bearer {TOKEN}"})
    body = {"name": "dev", "provider": "k3d", "http_port": 18090, "https_port": 18453}
    assert statements(alias, lambda: created(client, **body, pf_port=19001)) == (
        202,
        ["SELECT", "INSERT", "INSERT"],
    )
    # The one host ever registered is chosen, though its reconciler is not live.
    assert Cluster.objects.get().host == "docker-9"


# Each write's round trips (create, update, delete), per database, in the
# request's own transaction (not a test's). On PostgreSQL BEGIN and the
# savepoint travel with the next statement, and the write-through copy into
# SQLite follows the commit; on SQLite the journal is written by triggers.
# The copy: a faster sync and SQLite's write lock, the journal read once,
# then per row its copy read (not for a row PostgreSQL has just inserted)
# and written, and the versions acknowledged.
COPY_AHEAD = ["PRAGMA", "BEGIN", "SELECT"]
COPY_DONE = ["COMMIT", "PRAGMA"]
WRITE_ROUND_TRIPS = {
    "postgres": [
        {
            "postgres": ["BEGIN;SELECT", "SAVEPOINT;INSERT", "INSERT", "COMMIT"],
            "sqlite": [*COPY_AHEAD, "INSERT", "INSERT", "INSERT x2", *COPY_DONE],
        },
        {
            "postgres": ["BEGIN;SELECT", "SAVEPOINT;UPDATE", "COMMIT"],
            "sqlite": [*COPY_AHEAD, "SELECT", "INSERT", "INSERT x1", *COPY_DONE],
        },
        {
            "postgres": ["BEGIN;SELECT", "UPDATE", "INSERT", "COMMIT"],
            "sqlite": [*COPY_AHEAD, "SELECT", "UPDATE", "INSERT", "INSERT x2", *COPY_DONE],
        },
    ],
    "sqlite": [
        {"sqlite": ["SELECT", "BEGIN", "SAVEPOINT", "INSERT", "INSERT", "COMMIT"]},
        {"sqlite": ["SELECT", "BEGIN", "SAVEPOINT", "UPDATE", "COMMIT"]},
        {"sqlite": ["SELECT", "BEGIN", "UPDATE", "INSERT", "COMMIT"]},
    ],
}


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_create_update_and_delete_make_these_round_trips(alias: str, settings: Any) -> None:
    make_registration()
    settings.KINDLER_API_TOKEN = TOKEN
    client = Client(headers={"Authorization": f"Bearer {TOKEN}"})
    body = {"name": "dev", "provider": "k3d", "http_port": 18090, "https_port": 18453}
    trips = [
        round_trips(lambda: created(client, **body, pf_port=19001)),
        round_trips(
            lambda: client.patch(
                "/api/clusters/dev",
                json.dumps({"node_port": 31000}),
                content_type="application/json",
            )
        ),
        round_trips(lambda: client.delete("/api/clusters/dev")),
    ]
    expected = [{a: trips.get(a, []) for a in BOTH} for trips in WRITE_ROUND_TRIPS[alias]]
    print(trips)
    assert trips == list(zip([202, 200, 202], expected, strict=True))


def test_reads_of_the_api_run_one_query(alias: str, settings: Any) -> None:
    make_cluster(name="dev")
    settings.KINDLER_API_TOKEN = TOKEN
    client = Client(headers={"Authorization": f"Bearer {TOKEN}"})
    assert [
        statements(alias, lambda: client.get("/api/clusters")),
        statements(alias, lambda: client.get("/api/clusters/dev")),
    ] == [(200, ["SELECT"]), (200, ["SELECT"])]


def test_an_update_onto_a_taken_port_is_422_naming_the_holder(alias: str, settings: Any) -> None:
    make_cluster(name="dev", http_port=18090, https_port=18453, pf_port=19001)
    make_cluster(name="uat", http_port=18091, https_port=18454, pf_port=19002)
    settings.KINDLER_API_TOKEN = TOKEN
    client = Client(headers={"Authorization": f"Bearer {TOKEN}"})
    response = client.patch(
        "/api/clusters/uat", json.dumps({"http_port": 18090}), content_type="application/json"
    )
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {"loc": ["body", "http_port"], "msg": "Port 18090 is already used by cluster dev."}
            ]
        },
    )


LIMIT = (
    "Kindler holds its most clusters (2, KINDLER_MAX_CLUSTERS): delete one before creating another."
)


def test_create_past_kindler_max_clusters_is_422(
    alias: str, admin_client: Client, settings: Any
) -> None:
    settings.KINDLER_MAX_CLUSTERS = 2
    make_cluster(name="one")
    make_cluster(name="two")
    response = created(admin_client, name="three", provider="k3d")
    assert (response.status_code, response.json()) == (
        422,
        {"detail": [{"loc": ["body"], "msg": LIMIT}]},
    )
    assert sorted(Cluster.objects.values_list("name", flat=True)) == ["one", "two"]


def test_clusters_marked_for_deletion_leave_room(
    alias: str, admin_client: Client, settings: Any
) -> None:
    settings.KINDLER_MAX_CLUSTERS = 2
    make_cluster(name="one")
    make_cluster(name="two", desired_state=DesiredState.ABSENT)
    assert created(admin_client, name="three", provider="k3d").status_code == 202


QUOTA = (
    "alice holds their most clusters (1, KINDLER_MAX_CLUSTERS_PER_USER): delete one of theirs "
    "before creating another."
)


def test_create_past_a_persons_quota_is_422(alias: str, client: Client, settings: Any) -> None:
    settings.KINDLER_MAX_CLUSTERS_PER_USER = 1
    client.force_login(make_superuser(username="alice"))
    first = created(client, name="one", provider="k3d")
    second = created(client, name="two", provider="k3d")
    assert (first.status_code, second.status_code, second.json()) == (
        202,
        422,
        {"detail": [{"loc": ["body"], "msg": QUOTA}]},
    )
    assert list(Cluster.objects.values_list("name", "created_by")) == [("one", "alice")]


def test_a_persons_quota_counts_only_their_clusters(
    alias: str, client: Client, settings: Any
) -> None:
    settings.KINDLER_MAX_CLUSTERS_PER_USER = 1
    make_cluster(name="bobs", created_by="bob")
    make_cluster(name="nobodys")
    client.force_login(make_superuser(username="alice"))
    assert created(client, name="one", provider="k3d").status_code == 202


def test_the_api_token_has_no_quota(alias: str, client: Client, settings: Any) -> None:
    settings.KINDLER_MAX_CLUSTERS_PER_USER = 1
    settings.KINDLER_API_TOKEN = "quota-token-" + "x" * 24
    auth = {"Authorization": f"Bearer {settings.KINDLER_API_TOKEN}"}
    answers = [
        post_json(client, "/api/clusters", {"name": name, "provider": "k3d"}, **auth).status_code
        for name in ("one", "two")
    ]
    assert (answers, list(Cluster.objects.values_list("created_by", flat=True))) == (
        [202, 202],
        ["", ""],
    )
