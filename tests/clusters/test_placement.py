"""Placement (clusters/placement.py): which Docker host a cluster gets, and who acts on it."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client

from clusters import lifecycle, placement
from clusters.models import Cluster, OperationLog
from clusters.reconciler import Reconciler
from tests.conftest import BOTH
from tests.factories import cluster_fields, make_cluster, make_registration, make_superuser
from tests.fakes import FakeTools

pytestmark = pytest.mark.django_db(databases=BOTH)

SEVERAL = (
    "Several Docker hosts have a reconciler (docker-1, docker-2): name one, "
    "or set KINDLER_DEFAULT_HOST."
)


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


@pytest.fixture(autouse=True)
def _no_default_host(settings: Any) -> None:
    settings.KINDLER_DEFAULT_HOST = ""
    settings.KINDLER_HOST_NAME = "this-machine"


def post_json(client: Client, body: Any) -> Any:
    return client.post("/api/clusters", json.dumps(body), content_type="application/json")


def waiting(host: str) -> str:
    return (
        f"No reconciler is running for host {host}: nothing will happen until one starts "
        f"there (scripts/manage reconcile with KINDLER_HOST_NAME={host})."
    )


def test_a_named_host_wins(alias: str) -> None:
    make_registration(host="docker-1")
    assert placement.choose_host("docker-9") == "docker-9"


def test_the_only_live_host_is_the_default(alias: str) -> None:
    make_registration(host="docker-1")
    make_registration(host="docker-2", seconds_ago=3600)
    assert placement.choose_host() == "docker-1"


def test_kindler_default_host_is_the_default(alias: str, settings: Any) -> None:
    settings.KINDLER_DEFAULT_HOST = "docker-2"
    make_registration(host="docker-1")
    assert placement.choose_host() == "docker-2"


def test_with_none_live_the_only_host_ever_registered_is_the_default(alias: str) -> None:
    make_registration(host="docker-1", seconds_ago=3600)
    assert placement.choose_host() == "docker-1"


def test_with_no_reconciler_ever_this_machine_is_the_default(alias: str) -> None:
    assert placement.choose_host() == "this-machine"


def test_several_live_hosts_and_no_default_need_a_name(alias: str) -> None:
    make_registration(host="docker-1")
    make_registration(host="docker-2")
    with pytest.raises(ValidationError) as caught:
        placement.choose_host()
    assert caught.value.message_dict == {"host": [SEVERAL]}


def test_the_api_refuses_a_create_that_names_no_host_among_several(
    alias: str, admin_client: Client
) -> None:
    make_registration(host="docker-1")
    make_registration(host="docker-2")
    response = post_json(admin_client, {"name": "dev"})
    assert (response.status_code, response.json()) == (
        422,
        {"detail": [{"loc": ["body", "host"], "msg": SEVERAL}]},
    )
    assert Cluster.objects.exists() is False


def test_the_api_places_a_cluster_on_the_named_host(alias: str, admin_client: Client) -> None:
    make_registration(host="docker-1")
    make_registration(host="docker-2")
    response = post_json(admin_client, {"name": "dev", "host": "docker-2"})
    assert (response.status_code, response.json()["message"]) == (
        202,
        "Cluster creation task created for dev",
    )
    assert Cluster.objects.get().host == "docker-2"


def test_a_create_for_a_host_with_no_live_reconciler_is_accepted_and_says_so(
    alias: str, admin_client: Client
) -> None:
    response = post_json(admin_client, {"name": "dev", "host": "docker-3"})
    assert (response.status_code, response.json()["message"]) == (
        202,
        f"Cluster creation task created for dev. {waiting('docker-3')}",
    )
    assert OperationLog.objects.get().status == "pending"


def test_a_provider_the_live_reconciler_lacks_is_422(alias: str, admin_client: Client) -> None:
    make_registration(host="docker-1", providers={"k3d": "v5.7.4"})
    response = post_json(admin_client, {"name": "dev", "provider": "kind"})
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "provider"],
                    "msg": "the reconciler on docker-1 has no kind on its PATH; install it: "
                    "https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
                }
            ]
        },
    )


def test_a_bad_host_name_is_422(alias: str, admin_client: Client) -> None:
    response = post_json(admin_client, {"name": "dev", "host": "-docker"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "host"]
    assert error["msg"].startswith("A host name is up to 253 letters, digits, dots")


def test_a_patch_cannot_move_a_cluster_to_another_host(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", host="docker-1")
    response = admin_client.patch(
        "/api/clusters/dev", json.dumps({"host": "docker-2"}), content_type="application/json"
    )
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "host"],
                    "msg": "A cluster stays on its Docker host: delete it and create it on "
                    "the other host.",
                }
            ]
        },
    )
    assert Cluster.objects.get().host == "docker-1"


def test_the_detail_page_says_when_no_reconciler_runs_for_the_host(
    alias: str, admin_client: Client
) -> None:
    make_cluster(name="dev", host="docker-3")
    response = admin_client.get("/clusters/dev/")
    assert response.context["waiting"] == waiting("docker-3")
    assert "<dt>Docker host</dt><dd>docker-3</dd>" in response.text


def test_the_detail_page_is_quiet_while_the_hosts_reconciler_runs(
    alias: str, admin_client: Client
) -> None:
    make_registration(host="docker-1")
    make_cluster(name="dev", host="docker-1")
    assert admin_client.get("/clusters/dev/").context["waiting"] is None


def test_the_dashboard_names_hosts_without_a_live_reconciler(
    alias: str, admin_client: Client
) -> None:
    make_registration(host="docker-1")
    make_cluster(host="docker-1")
    make_cluster(host="docker-3")
    response = admin_client.get("/")
    assert response.context["waiting_hosts"] == ["docker-3"]
    assert "No reconciler is running for host docker-3" in response.text
    assert "No reconciler is running for host docker-1" not in response.text


def test_the_empty_dashboard_says_what_to_install(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/")
    assert response.context["no_providers"] is True
    assert 'href="https://k3d.io/#installation"' in response.text
    assert "No reconciler is running. <code>scripts/run</code> starts one" in response.text


def test_a_live_reconciler_without_providers_is_not_told_to_start(
    alias: str, admin_client: Client
) -> None:
    make_registration(host="vm", providers={})
    response = admin_client.get("/")
    notices = re.findall(r'<p class="notice notice-error">(.*?)</p>', response.text)
    assert notices == [
        "The reconciler running on vm finds neither k3d nor kind. Install "
        '<a href="https://k3d.io/#installation">k3d</a> or '
        '<a href="https://kind.sigs.k8s.io/docs/user/quick-start/#installation">kind</a> '
        "(and Docker) there, then restart it (<code>scripts/run</code> again, when "
        "<code>scripts/run</code> started it)."
    ]


def test_the_create_form_places_on_the_default_host(alias: str, admin_client: Client) -> None:
    make_registration(host="docker-1")
    response = admin_client.post(
        "/new/", {**cluster_fields(name="dev"), "node_port": 30080, "host": ""}
    )
    assert response.status_code == 302
    assert Cluster.objects.get().host == "docker-1"


def test_the_create_form_asks_for_a_host_among_several(alias: str, admin_client: Client) -> None:
    make_registration(host="docker-1")
    make_registration(host="docker-2")
    response = admin_client.post(
        "/new/", {**cluster_fields(name="dev"), "node_port": 30080, "host": ""}
    )
    assert response.status_code == 422
    assert response.context["form"].errors["host"] == [SEVERAL]


def test_cluster_create_takes_a_host(alias: str) -> None:
    out = StringIO()
    call_command("cluster", "create", "dev", "--host", "docker-3", stdout=out)
    assert out.getvalue() == f"Cluster dev added on docker-3. {waiting('docker-3')}\n"
    assert Cluster.objects.get().host == "docker-3"


def test_cluster_create_names_the_host_it_chose(alias: str) -> None:
    make_registration(host="docker-1")
    out = StringIO()
    call_command("cluster", "create", "dev", stdout=out)
    assert out.getvalue() == "Cluster dev added on docker-1; its reconciler will create it.\n"


def test_cluster_create_among_several_hosts_is_a_command_error(alias: str) -> None:
    make_registration(host="docker-1")
    make_registration(host="docker-2")
    with pytest.raises(CommandError, match=r"^host: Several Docker hosts have a reconciler"):
        call_command("cluster", "create", "dev", stdout=StringIO())


def test_the_export_writes_hosts_when_clusters_span_several(alias: str) -> None:
    make_cluster(name="a", host="docker-1", http_port=18080, https_port=18443, pf_port=19000)
    make_cluster(name="b", host="docker-2", http_port=18080, https_port=18443, pf_port=19000)
    out = StringIO()
    call_command("export_environments", stdout=out)
    assert out.getvalue().splitlines() == [
        "# env,provider,node_port,pf_port,register_portainer,haproxy_route,http_port,"
        "https_port,cluster_subnet,host",
        "a,k3d,30080,19000,true,true,18080,18443,,docker-1",
        "b,k3d,30080,19000,true,true,18080,18443,,docker-2",
    ]


def test_the_import_reads_the_host_column(alias: str, tmp_path: Path) -> None:
    path = tmp_path / "environments.csv"
    path.write_text(
        "# env,provider,node_port,pf_port,register_portainer,haproxy_route,http_port,"
        "https_port,cluster_subnet,host\n"
        "a,k3d,30080,19000,true,true,18080,18443,,docker-1\n"
        "b,k3d,30080,19000,true,true,18080,18443,,docker-2\n"
    )
    call_command("import_environments", str(path), stdout=StringIO(), stderr=StringIO())
    assert list(Cluster.objects.values_list("name", "host")) == [
        ("a", "docker-1"),
        ("b", "docker-2"),
    ]


def test_the_import_refuses_to_move_a_cluster_to_another_host(alias: str, tmp_path: Path) -> None:
    make_cluster(name="a", host="docker-1")
    path = tmp_path / "environments.csv"
    path.write_text(
        "# env,provider,node_port,pf_port,register_portainer,haproxy_route,http_port,"
        "https_port,cluster_subnet,host\n"
        "a,k3d,30080,19000,true,true,18080,18443,,docker-2\n"
    )
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("import_environments", str(path), stdout=StringIO(), stderr=err)
    assert "a cluster stays on its Docker host" in err.getvalue()
    assert Cluster.objects.get().host == "docker-1"


def test_a_reconciler_acts_only_on_its_hosts_clusters(alias: str, fakes: FakeTools) -> None:
    lifecycle.request_create(**cluster_fields(name="mine", host="docker-1"))
    _, theirs_task = lifecycle.request_create(**cluster_fields(name="theirs", host="docker-2"))
    Reconciler(host="docker-1").run_once()
    assert fakes.actions() == [fakes.actions()[0]]
    assert fakes.actions()[0][:4] == ["k3d", "cluster", "create", "mine"]
    # The other host's request is left for its own reconciler, not closed as an orphan.
    assert OperationLog.objects.get(uid=theirs_task.uid).status == "pending"
    assert Cluster.objects.get(name="theirs").actual_state == "unknown"
    Reconciler(host="docker-2").run_once()
    assert sorted(fakes.clusters()) == ["mine", "theirs"]
    assert OperationLog.objects.get(uid=theirs_task.uid).status == "success"


def test_the_first_reconciler_places_clusters_that_have_no_host(
    alias: str, fakes: FakeTools
) -> None:
    make_cluster(name="old", host="docker-1", http_port=17021)
    insert_unplaced(alias, name="older", http_port=17030)
    insert_unplaced(alias, name="clashing", http_port=17021)
    Reconciler(host="docker-1").run_once()
    rows = Cluster.objects.order_by("name").values_list("name", "host")
    assert list(rows) == [("clashing", ""), ("old", "docker-1"), ("older", "docker-1")]
    assert sorted(fakes.clusters()) == ["old", "older"]


def test_the_detail_page_of_an_unplaced_cluster_says_it_waits_for_a_reconciler(
    alias: str, admin_client: Client
) -> None:
    insert_unplaced(alias, name="older")
    response = admin_client.get("/clusters/older/")
    assert response.context["waiting"] == placement.UNPLACED
    assert admin_client.get("/").context["waiting_hosts"] == []


def insert_unplaced(alias: str, **fields: Any) -> None:
    """Save a cluster as the placement migration leaves the older ones: no host."""
    cluster = Cluster(**cluster_fields(**fields))
    cluster.host = ""
    cluster.save(using=alias)


@pytest.mark.parametrize("host", ["docker\x00-1", "d" * 254, "docker 1", "докер"])
def test_a_host_the_database_could_refuse_is_422_before_any_query(
    alias: str, admin_client: Client, host: str
) -> None:
    response = post_json(admin_client, {"name": "dev", "host": host})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "host"]]
