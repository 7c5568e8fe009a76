"""The dashboard pages through the test client, on both databases."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.test import Client

from clusters.models import Cluster, DesiredState, OperationLog
from kindler.db.failover.monitor import State
from tests.conftest import BOTH, wait_for_state
from tests.factories import cluster_fields, make_cluster, make_operation, make_superuser
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


def rows(response: Any) -> list[str]:
    """Return the cluster names linked from a list page, in order."""
    return re.findall(r'<td><a href="/clusters/[^/]+/">([^<]+)</a></td>', response.text)


def form_data(**overrides: Any) -> dict[str, Any]:
    fields = cluster_fields(**overrides)
    data = {key: value for key, value in fields.items() if value is not None}
    data.setdefault("node_port", 30080)
    return data


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_the_list_requires_a_login(client: Client) -> None:
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (302, "/accounts/login/?next=/")


def test_the_login_page_is_public(client: Client) -> None:
    assert client.get("/accounts/login/").status_code == 200


def test_a_person_can_log_in(client: Client, admin_user: Any) -> None:
    response = client.post("/accounts/login/", {"username": "admin", "password": "password"})
    assert (response.status_code, response["Location"]) == (302, "/")


def test_the_list_shows_clusters_by_name(alias: str, admin_client: Client) -> None:
    make_cluster(name="qa")
    make_cluster(name="dev")
    response = admin_client.get("/")
    assert response.status_code == 200
    assert rows(response) == ["dev", "qa"]


def test_the_list_shows_the_last_operation_and_its_status(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    make_operation(cluster, operation="create", status="success")
    make_operation(cluster, operation="stop", status="running")
    response = admin_client.get("/")
    assert 'stop <span class="status status-running">running</span>' in response.text


def test_the_desired_state_reads_as_the_api_and_the_command_line_say_it(
    alias: str, admin_client: Client
) -> None:
    make_cluster(name="dev", actual_state="running")
    make_cluster(name="qa", desired_state=DesiredState.STOPPED, actual_state="stopped")
    listed = admin_client.get("/").text
    desired = re.findall(r'<td>(\w+)</td>\s*<td><span class="state ', listed)
    shown = admin_client.get("/clusters/dev/").text
    assert (desired, "<dt>Desired state</dt><dd>present</dd>" in shown) == (
        ["present", "stopped"],
        True,
    )


def test_the_list_summarises_counts_by_state(alias: str, admin_client: Client) -> None:
    make_cluster(actual_state="running")
    make_cluster(actual_state="running")
    make_cluster(actual_state="failed")
    response = admin_client.get("/")
    assert response.context["summary"] == [("running", 2), ("failed", 1)]
    assert response.context["total"] == 3


def test_the_list_searches_by_name(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev-a")
    make_cluster(name="qa")
    assert rows(admin_client.get("/?q=dev")) == ["dev-a"]


def test_the_list_filters_by_provider(alias: str, admin_client: Client) -> None:
    make_cluster(name="one", provider="kind")
    make_cluster(name="two", provider="k3d")
    assert rows(admin_client.get("/?provider=kind")) == ["one"]


def test_the_list_filters_by_actual_state(alias: str, admin_client: Client) -> None:
    make_cluster(name="one", actual_state="stopped")
    make_cluster(name="two", actual_state="running")
    assert rows(admin_client.get("/?state=stopped")) == ["one"]


def test_the_list_is_paginated_by_50(alias: str, admin_client: Client) -> None:
    Cluster.objects.bulk_create(
        [Cluster(**cluster_fields(name=f"c{index:03d}")) for index in range(51)]
    )
    first, second = admin_client.get("/"), admin_client.get("/?page=2")
    assert (len(rows(first)), rows(second)) == (50, ["c050"])


def test_the_empty_list_explains_how_to_add_clusters(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/")
    assert "No clusters yet." in response.text


def test_a_filter_matching_nothing_says_so(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = admin_client.get("/?q=zzz")
    assert "No cluster matches these filters." in response.text


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_fallback_banner_shows_while_postgres_is_down(
    client: Client, pg: PostgresServer
) -> None:
    pg.stop()
    wait_for_state(State.FALLBACK)
    response = client.get("/accounts/login/")
    assert re.search(
        r"PostgreSQL unreachable since \d\d:\d\d — changes are kept locally and will be "
        r"synced when it returns\.",
        response.text,
    )


def test_no_banner_while_on_postgres(admin_client: Client) -> None:
    assert "PostgreSQL unreachable" not in admin_client.get("/").text


def test_the_detail_page_shows_every_field(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", subnet="10.101.0.0/16", server_ip="10.101.0.2")
    response = admin_client.get("/clusters/dev/")
    assert response.status_code == 200
    assert response.context["cluster"].name == "dev"
    assert "<dt>Subnet</dt><dd>10.101.0.0/16</dd>" in response.text
    assert "<dt>Server IP</dt><dd>10.101.0.2</dd>" in response.text


def test_the_detail_page_lists_operations_newest_first(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    make_operation(cluster, operation="create")
    make_operation(cluster, operation="stop")
    response = admin_client.get("/clusters/dev/")
    assert [op.operation for op in response.context["page"]] == ["stop", "create"]


def test_a_running_operation_is_polled(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    operation = make_operation(cluster, status="running")
    response = admin_client.get("/clusters/dev/")
    assert f'data-poll-url="/clusters/dev/operations/{operation.uid}/"' in response.text


def test_a_finished_operation_is_not_polled(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    make_operation(cluster, status="success")
    assert "data-poll-url" not in admin_client.get("/clusters/dev/").text


def test_the_operation_fragment_renders_one_operation(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    operation = make_operation(cluster, status="running", log_output="INFO creating node")
    response = admin_client.get(f"/clusters/dev/operations/{operation.uid}/")
    assert response.status_code == 200
    assert response.text.lstrip().startswith(
        f'<details class="operation card" open id="operation-{operation.uid}"'
    )
    assert "INFO creating node" in response.text


def test_an_unknown_cluster_is_a_404_page(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/clusters/nope/")
    assert response.status_code == 404
    assert "Page not found" in response.text


def test_the_create_form_adds_a_cluster_that_should_exist(alias: str, admin_client: Client) -> None:
    response = admin_client.post("/new/", form_data(name="dev"))
    assert (response.status_code, response["Location"]) == (302, "/clusters/dev/")
    assert Cluster.objects.get(name="dev").desired_state == DesiredState.PRESENT
    assert OperationLog.objects.get().operation == "create"


def test_the_create_form_offers_ports_no_cluster_uses(alias: str, admin_client: Client) -> None:
    make_cluster(name="devops", http_port=18080, https_port=18443, pf_port=19000)
    make_cluster(name="dev", http_port=18081, https_port=18444, pf_port=19001)
    initial = admin_client.get("/new/").context["form"].initial
    assert initial == {
        "http_port": 18082,
        "https_port": 18445,
        "pf_port": 19002,
        "host": settings.KINDLER_HOST_NAME,
    }


def test_an_empty_post_to_the_create_form_shows_what_is_missing(
    alias: str, admin_client: Client
) -> None:
    response = admin_client.post("/new/", {})
    assert response.status_code == 422
    assert response.context["form"].errors["name"] == ["This field is required."]


def test_the_create_form_refuses_a_duplicate_name(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = admin_client.post("/new/", form_data(name="dev"))
    assert response.status_code == 422
    assert response.context["form"].errors == {"name": ["A cluster named dev already exists."]}


def test_the_create_form_refuses_a_port_in_use(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", http_port=18090)
    response = admin_client.post("/new/", form_data(name="qa", http_port=18090))
    assert response.context["form"].errors == {
        "http_port": ["Port 18090 is already used by cluster dev."]
    }


def test_the_create_form_shows_errors_beside_their_field(alias: str, admin_client: Client) -> None:
    response = admin_client.post("/new/", form_data(name="dev", subnet="10.0.0.0/33"))
    assert '<div class="field has-errors">' in response.text
    assert response.context["form"].errors == {
        "subnet": [
            "10.0.0.0/33 is not a valid IPv4 CIDR such as 10.100.0.0/16 "
            "(10.0.0.0/33 does not appear to be an IPv4 or IPv6 network)."
        ]
    }


def test_the_edit_form_changes_ports(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    data = form_data(http_port=18123, https_port=18124, pf_port=18125)
    del data["name"]
    response = admin_client.post("/clusters/dev/edit/", data)
    assert (response.status_code, response["Location"]) == (302, "/clusters/dev/")
    assert Cluster.objects.get(name="dev").http_port == 18123


def test_the_edit_form_keeps_the_name(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    data = form_data(name="renamed")
    admin_client.post("/clusters/dev/edit/", data)
    assert list(Cluster.objects.values_list("name", flat=True)) == ["dev"]


def test_the_edit_form_keeps_the_name_the_provider_and_the_host(
    alias: str, admin_client: Client
) -> None:
    make_cluster(name="dev", provider="k3d", host="docker-1")
    data = form_data(name="renamed", provider="kind", host="docker-2")
    admin_client.post("/clusters/dev/edit/", data)
    assert list(Cluster.objects.values_list("name", "provider", "host")) == [
        ("dev", "k3d", "docker-1")
    ]


def test_delete_needs_the_name_typed(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = admin_client.post("/clusters/dev/delete/", {"confirm_name": "de"})
    assert response.context["form"].errors == {
        "confirm_name": ["Type dev exactly to confirm the deletion."]
    }
    assert Cluster.objects.get(name="dev").desired_state == DesiredState.PRESENT


def test_delete_with_the_name_marks_it_absent(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = admin_client.post("/clusters/dev/delete/", {"confirm_name": "dev"})
    assert (response.status_code, response["Location"]) == (302, "/clusters/dev/")
    assert Cluster.objects.get(name="dev").desired_state == DesiredState.ABSENT
    assert messages_of(response) == ["Cluster dev marked for deletion."]


def test_devops_cannot_be_deleted(alias: str, admin_client: Client) -> None:
    make_cluster(name="devops")
    response = admin_client.post("/clusters/devops/delete/", {"confirm_name": "devops"})
    assert response.status_code == 403
    assert "The devops cluster cannot be deleted" in response.text
    assert Cluster.objects.get(name="devops").desired_state == DesiredState.PRESENT


def test_stop_button_asks_for_a_stop(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    response = admin_client.post("/clusters/dev/stop/")
    assert (response.status_code, response["Location"]) == (302, "/clusters/dev/")
    assert Cluster.objects.get(name="dev").desired_state == DesiredState.STOPPED
    assert messages_of(response) == ["Cluster dev will be stopped."]


def test_start_button_asks_for_a_start(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", desired_state=DesiredState.STOPPED)
    admin_client.post("/clusters/dev/start/")
    assert Cluster.objects.get(name="dev").desired_state == DesiredState.PRESENT


def test_start_refuses_a_cluster_marked_for_deletion(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", desired_state=DesiredState.ABSENT)
    response = admin_client.post("/clusters/dev/start/")
    assert messages_of(response) == ["Cluster dev is marked for deletion."]
    assert Cluster.objects.get(name="dev").desired_state == DesiredState.ABSENT


def test_stop_by_get_is_refused(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev")
    assert admin_client.get("/clusters/dev/stop/").status_code == 405


def test_forms_refuse_a_post_without_csrf_token(admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post("/new/", form_data(name="dev"))
    assert response.status_code == 403
    assert "This form has expired" in response.text


def test_the_create_form_shows_preflight_errors_beside_their_field(
    alias: str, admin_client: Client
) -> None:
    make_cluster(name="dev", subnet="10.101.0.0/16")
    response = admin_client.post("/new/", form_data(name="qa", subnet="10.101.0.0/24"))
    assert response.status_code == 422
    assert response.context["form"].errors == {
        "subnet": ["subnet 10.101.0.0/24 overlaps cluster dev"]
    }
    assert Cluster.objects.filter(name="qa").count() == 0


@pytest.mark.parametrize("port", ["99999999999999999999", "-99999999999999999999"])
def test_the_create_form_refuses_a_port_out_of_range_with_422(
    alias: str, admin_client: Client, port: str
) -> None:
    response = admin_client.post("/new/", form_data(name="dev", http_port=port))
    assert response.status_code == 422
    assert response.context["form"].errors == {
        "http_port": ["Ports must be between 1024 and 65535."]
    }
    assert Cluster.objects.exists() is False


def test_the_edit_form_refuses_a_port_out_of_range_with_422(
    alias: str, admin_client: Client
) -> None:
    dev = make_cluster(name="dev")
    data = form_data(http_port="99999999999999999999")
    del data["name"]
    response = admin_client.post("/clusters/dev/edit/", data)
    assert response.status_code == 422
    assert response.context["form"].errors == {
        "http_port": ["Ports must be between 1024 and 65535."]
    }
    assert Cluster.objects.get().http_port == dev.http_port


def test_the_edit_form_refuses_an_overlapping_subnet(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", subnet="10.101.0.0/16")
    make_cluster(name="qa")
    data = form_data(subnet="10.101.0.0/24")
    del data["name"]
    response = admin_client.post("/clusters/qa/edit/", data)
    assert response.status_code == 422
    assert response.context["form"].errors == {
        "subnet": ["subnet 10.101.0.0/24 overlaps cluster dev"]
    }
    assert Cluster.objects.get(name="qa").subnet == ""


def test_the_create_form_past_kindler_max_clusters_is_422(
    alias: str, admin_client: Client, settings: Any
) -> None:
    settings.KINDLER_MAX_CLUSTERS = 2
    make_cluster(name="one")
    make_cluster(name="two")
    response = admin_client.post("/new/", form_data(name="three"))
    assert response.status_code == 422
    assert response.context["form"].non_field_errors() == [
        "Kindler holds its most clusters (2, KINDLER_MAX_CLUSTERS): delete one before creating "
        "another."
    ]
    assert Cluster.objects.filter(name="three").exists() is False


def test_the_create_form_past_a_persons_quota_is_422(
    alias: str, admin_client: Client, settings: Any
) -> None:
    settings.KINDLER_MAX_CLUSTERS_PER_USER = 1
    make_cluster(name="one", created_by="admin")
    response = admin_client.post("/new/", form_data(name="two"))
    assert response.status_code == 422
    assert response.context["form"].non_field_errors() == [
        "admin holds their most clusters (1, KINDLER_MAX_CLUSTERS_PER_USER): delete one of "
        "theirs before creating another."
    ]
    assert Cluster.objects.filter(name="two").exists() is False


def test_the_create_form_records_who_asked(alias: str, admin_client: Client) -> None:
    admin_client.post("/new/", form_data(name="dev"))
    assert Cluster.objects.get(name="dev").created_by == "admin"
