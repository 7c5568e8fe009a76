from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from clusters.models import Cluster, OperationLog
from tests.conftest import BOTH
from tests.factories import make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH)


def run(*args: str) -> str:
    out = StringIO()
    call_command("cluster", *args, stdout=out)
    return out.getvalue()


def test_list_says_so_when_there_are_no_clusters(alias: str) -> None:
    assert run("list") == "No clusters.\n"


def test_list_prints_an_aligned_table(alias: str) -> None:
    make_cluster(
        name="dev", provider="kind", host="docker-1", http_port=18090, https_port=18453,
        pf_port=19001,
    )  # fmt: skip
    make_cluster(
        name="uat", host="docker-22", http_port=18100, https_port=18463, pf_port=19002,
        subnet="10.101.0.0/16",
    )  # fmt: skip
    assert run("list") == (
        "NAME  PROVIDER  HOST       HTTP_PORT  HTTPS_PORT  PF_PORT  NODE_PORT  CLUSTER_SUBNET  "
        "DESIRED_STATE  ACTUAL_STATE\n"
        "dev   kind      docker-1   18090      18453       19001    30080      -               "
        "present        unknown\n"
        "uat   k3d       docker-22  18100      18463       19002    30080      10.101.0.0/16   "
        "present        unknown\n"
    )


def test_list_json_is_the_api_representation(alias: str) -> None:
    make_cluster(name="dev")
    rows = json.loads(run("list", "--json"))
    assert [(row["name"], row["status"], row["cluster_subnet"]) for row in rows] == [
        ("dev", "unknown", None)
    ]


def test_show_prints_every_field(alias: str) -> None:
    cluster = make_cluster(
        name="dev", host="docker-1", http_port=18090, https_port=18453, pf_port=19001
    )
    lines = run("show", "dev").splitlines()
    assert lines[:7] == [
        "name                dev",
        "provider            k3d",
        "host                docker-1",
        "node_port           30080",
        "pf_port             19001",
        "http_port           18090",
        "https_port          18453",
    ]
    assert f"created_at          {cluster.created_at.isoformat()}" in lines


def test_show_prints_the_error_without_terminal_escapes(alias: str) -> None:
    make_cluster(
        name="dev", reconcile_error="k3d exited 1: \x1b[31mFATA\x1b[0m\x1b]0;pwned\x07 boom"
    )
    assert "reconcile_error     k3d exited 1: FATA boom" in run("show", "dev").splitlines()


def test_show_json(alias: str) -> None:
    make_cluster(name="dev")
    assert json.loads(run("show", "dev", "--json"))["name"] == "dev"


def test_show_an_unknown_cluster_fails_with_its_name(alias: str) -> None:
    with pytest.raises(CommandError, match=r"^No cluster named ghost\.$"):
        run("show", "ghost")


def test_create_saves_the_cluster_and_queues_its_creation(alias: str) -> None:
    out = run(
        "create",
        "dev",
        "--provider",
        "kind",
        "--http-port",
        "18090",
        "--https-port",
        "18453",
        "--pf-port",
        "19001",
        "--host",
        "docker-1",
    )
    assert out == (
        "Cluster dev added on docker-1. No reconciler is running for host docker-1: nothing "
        "will happen until one starts there (scripts/manage reconcile with KINDLER_HOST_NAME="
        "docker-1).\n"
    )
    cluster = Cluster.objects.get(name="dev")
    assert (cluster.provider, cluster.http_port, cluster.desired_state) == (
        "kind",
        18090,
        "present",
    )
    assert list(OperationLog.objects.values_list("cluster_name", "operation", "status")) == [
        ("dev", "create", "pending")
    ]


def test_create_reports_every_validation_error_on_one_line(alias: str) -> None:
    make_cluster(name="dev", http_port=18090, https_port=18453, pf_port=19001)
    with pytest.raises(CommandError) as caught:
        run("create", "Bad_Name", "--http-port", "18090", "--https-port", "80")
    assert str(caught.value) == (
        "name: Use lower-case letters, digits and dashes, starting and ending with a letter or "
        "digit (a DNS-1123 label), e.g. dev-1. https_port: Ports must be between 1024 and 65535. "
        "http_port: Port 18090 is already used by cluster dev."
    )
    assert Cluster.objects.filter(name="Bad_Name").exists() is False


@pytest.mark.parametrize("port", ["99999999999999999999", "-99999999999999999999"])
def test_create_refuses_a_port_out_of_range_in_one_line(alias: str, port: str) -> None:
    with pytest.raises(CommandError) as caught:
        run("create", "dev", f"--http-port={port}")
    assert str(caught.value) == "http_port: Ports must be between 1024 and 65535."
    assert Cluster.objects.exists() is False


def test_create_refuses_a_host_port_of_another_cluster(alias: str) -> None:
    make_cluster(name="dev", http_port=18090, https_port=18453, pf_port=19001)
    with pytest.raises(
        CommandError, match=r"^http_port: Port 18090 is already used by cluster dev\.$"
    ):
        run("create", "uat", "--http-port", "18090")


def test_delete_marks_the_cluster_absent(alias: str) -> None:
    make_cluster(name="dev")
    assert run("delete", "dev") == "Cluster dev marked for deletion.\n"
    assert Cluster.objects.get(name="dev").desired_state == "absent"


def test_delete_refuses_devops(alias: str) -> None:
    make_cluster(name="devops")
    with pytest.raises(CommandError, match=r"^The devops cluster cannot be deleted\.$"):
        run("delete", "devops")
    assert Cluster.objects.get(name="devops").desired_state == "present"


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_refusal_exits_1_with_one_line_and_no_traceback(kindler_env: dict[str, Any]) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "cluster", "create", "Bad_Name"],
        cwd=settings.BASE_DIR,
        env=kindler_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    errors = [line for line in result.stderr.splitlines() if " kindler.db: " not in line]
    assert (result.returncode, errors) == (
        1,
        [
            "CommandError: name: Use lower-case letters, digits and dashes, starting and ending "
            "with a letter or digit (a DNS-1123 label), e.g. dev-1."
        ],
    )


def test_create_past_kindler_max_clusters_is_refused_in_one_line(alias: str, settings: Any) -> None:
    settings.KINDLER_MAX_CLUSTERS = 2
    make_cluster(name="one")
    make_cluster(name="two")
    with pytest.raises(CommandError) as caught:
        run("create", "three")
    assert str(caught.value) == (
        "Kindler holds its most clusters (2, KINDLER_MAX_CLUSTERS): delete one before creating "
        "another."
    )
    assert Cluster.objects.filter(name="three").exists() is False
