"""What the pages poll (clusters/live.py), and what the cluster pages show, through the client."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from clusters.models import Cluster, OperationLog
from tests.conftest import BOTH
from tests.factories import make_cluster, make_operation, make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)

HOOKS = json.dumps(
    [
        {
            "hook": "10-portainer",
            "status": "ok",
            "exit_code": 0,
            "seconds": 0.2,
            "claims": {"portainer": {"state": "registered", "detail": "endpoint 7"}},
        },
        {"hook": "20-argocd", "status": "failed", "exit_code": 2, "seconds": 0.1, "claims": {}},
    ]
)


@pytest.fixture
def admin_user(db: None) -> Any:
    return make_superuser()


def text_of(html: str) -> str:
    """Return html without tags, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def field(html: str, label: str) -> str:
    found = re.search(rf"<dt>{re.escape(label)}</dt>\s*<dd[^>]*>(.*?)</dd>", html, re.S)
    assert found is not None, label
    return text_of(found.group(1))


def test_the_cluster_live_part_comes_as_json_with_a_token(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev", actual_state="creating")
    running = make_operation(cluster, status="running")
    response = admin_client.get("/clusters/dev/live/")
    data = response.json()
    assert (response.status_code, sorted(data)) == (200, ["busy", "html", "operations", "token"])
    assert (data["busy"], data["operations"]) == (True, [str(running.uid)])
    assert '<span class="state state-creating" id="cluster-state">creating</span>' in data["html"]
    assert field(data["html"], "Actual state") == "creating"


def test_the_live_part_is_204_while_nothing_changed(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev", actual_state="creating")
    make_operation(cluster, status="running")
    token = admin_client.get("/clusters/dev/live/").json()["token"]
    unchanged = admin_client.get("/clusters/dev/live/", headers={"X-Live-Token": token})
    assert (unchanged.status_code, unchanged.content) == (204, b"")
    Cluster.objects.filter(pk=cluster.pk).update(actual_state="running")
    changed = admin_client.get("/clusters/dev/live/", headers={"X-Live-Token": token})
    assert changed.status_code == 200
    assert changed.json()["token"] != token
    assert field(changed.json()["html"], "Actual state") == "running"


def test_the_live_part_changes_when_an_operation_ends(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    operation = make_operation(cluster, status="running")
    token = admin_client.get("/clusters/dev/live/").json()["token"]
    OperationLog.objects.filter(pk=operation.pk).update(status="success")
    data = admin_client.get("/clusters/dev/live/", headers={"X-Live-Token": token}).json()
    assert data["busy"] is False


def test_a_deleted_cluster_keeps_its_history_in_the_live_part(
    alias: str, admin_client: Client
) -> None:
    cluster = make_cluster(name="gone")
    make_operation(cluster, operation="delete", status="success")
    Cluster.objects.filter(pk=cluster.pk).delete()
    data = admin_client.get("/clusters/gone/live/").json()
    assert text_of(data["html"]).startswith(
        "gone absent Deleted; its operation history is kept below."
    )


def test_an_unknown_cluster_is_404_json(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/clusters/nowhere/live/")
    assert (response.status_code, response.json()) == (404, {"detail": "No cluster named nowhere."})


def test_the_live_parts_require_a_login(client: Client) -> None:
    make_cluster(name="dev")
    assert client.get("/clusters/dev/live/").status_code == 302
    assert client.get("/live/").status_code == 302


def test_the_list_rows_come_with_a_token_each(alias: str, admin_client: Client) -> None:
    make_cluster(name="alpha", actual_state="running")
    make_cluster(name="beta", provider="kind", actual_state="stopped", desired_state="stopped")
    data = admin_client.get("/live/?provider=kind").json()
    assert [row["name"] for row in data["rows"]] == ["beta"]
    assert data["rows"][0]["html"].startswith(
        f'<tr data-name="beta" data-token="{data["rows"][0]["token"]}">'
    )
    assert text_of(data["html"]).startswith("2 clusters · 1 running · 1 stopped")
    again = admin_client.get("/live/?provider=kind", headers={"X-Live-Token": data["token"]})
    assert again.status_code == 204


def test_a_changed_row_changes_its_token_only(alias: str, admin_client: Client) -> None:
    make_cluster(name="alpha", actual_state="creating")
    make_cluster(name="beta", actual_state="running")
    before = {row["name"]: row["token"] for row in admin_client.get("/live/").json()["rows"]}
    Cluster.objects.filter(name="alpha").update(actual_state="running")
    after = {row["name"]: row["token"] for row in admin_client.get("/live/").json()["rows"]}
    assert (after["alpha"] != before["alpha"], after["beta"]) == (True, before["beta"])


def test_updated_is_the_last_change_of_state_not_the_last_edit(
    alias: str, admin_client: Client
) -> None:
    changed = timezone.now() - timedelta(days=2)
    cluster = make_cluster(name="dev", actual_state="running")
    Cluster.objects.filter(pk=cluster.pk).update(last_reconciled_at=changed)
    cluster.refresh_from_db()
    cluster.register_argocd = False
    cluster.save()
    html = admin_client.get("/").text
    expected = timezone.localtime(changed).strftime("%Y-%m-%d %H:%M")
    assert f'title="Last change of state">{expected}</time>' in html


def test_a_cluster_never_reconciled_shows_its_creation_as_updated(
    alias: str, admin_client: Client
) -> None:
    cluster = make_cluster(name="dev")
    html = admin_client.get("/").text
    expected = timezone.localtime(cluster.created_at).strftime("%Y-%m-%d %H:%M")
    assert f'title="Last change of state">{expected}</time>' in html


def test_flags_are_requested_until_a_hook_says_registered(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", haproxy_route=False)
    html = admin_client.get("/clusters/dev/").text
    assert [field(html, label) for label in ("Portainer", "HAProxy route", "Argo CD")] == [
        "requested · no hook has reported it",
        "not requested",
        "requested · no hook has reported it",
    ]
    assert "registered" not in text_of(html).replace("has reported", "")


def test_the_page_shows_what_the_last_hooks_said(
    alias: str, admin_client: Client, settings: Any
) -> None:
    settings.KINDLER_HOOKS_DIR = "/etc/kindler/hooks"
    cluster = make_cluster(name="dev")
    operation = make_operation(cluster, status="success", hooks=HOOKS)
    when = timezone.localtime(operation.created_at).strftime("%Y-%m-%d %H:%M:%S")
    html = admin_client.get("/clusters/dev/").text
    assert field(html, "Portainer") == (
        f"requested · registered by hook 10-portainer after create {when}: endpoint 7"
    )
    assert field(html, "Argo CD") == "requested · no hook has reported it"
    assert field(html, "Hooks") == (
        f"after create {when}: 10-portainer ok 20-argocd failed (exit 2)"
    )
    assert (
        '<p class="notice notice-warning">'
        "Hook 20-argocd did not succeed; the operation itself did.</p>"
    ) in html


@pytest.mark.parametrize(
    ("hooks_dir", "text"),
    [("", "none: KINDLER_HOOKS_DIR is not set"), ("/etc/kindler/hooks", "none has run yet")],
)
def test_the_hooks_field_says_why_none_ran(
    alias: str, admin_client: Client, settings: Any, hooks_dir: str, text: str
) -> None:
    settings.KINDLER_HOOKS_DIR = hooks_dir
    make_cluster(name="dev")
    assert field(admin_client.get("/clusters/dev/").text, "Hooks") == text


def test_an_operation_shows_its_command_once(alias: str, admin_client: Client) -> None:
    cluster = make_cluster(name="dev")
    make_operation(
        cluster,
        status="success",
        command="k3d cluster start dev",
        log_output="$ k3d cluster start dev\nINFO started\n",
    )
    html = admin_client.get("/clusters/dev/").text
    assert html.count("k3d cluster start dev") == 1


def test_a_stopped_cluster_reads_stopped(alias: str, admin_client: Client) -> None:
    make_cluster(name="dev", desired_state="stopped")
    html = admin_client.get("/clusters/dev/").text
    assert field(html, "Desired state") == "stopped"
    assert "<td>stopped</td>" in admin_client.get("/").text


def test_checkbox_labels_have_no_colon(alias: str, admin_client: Client) -> None:
    html = admin_client.get("/new/").text
    labels = re.findall(r'<input type="checkbox"[^>]*> <label for="[^"]+">([^<]+)</label>', html)
    assert labels == ["Register in Portainer", "Route through HAProxy", "Register in Argo CD"]


def test_the_detail_page_draws_its_operations_on_a_time_line(
    alias: str, admin_client: Client
) -> None:
    cluster = make_cluster(name="dev")
    started = timezone.now() - timedelta(minutes=5)
    make_operation(
        cluster, status="success", started_at=started, completed_at=started + timedelta(seconds=42)
    )
    make_operation(cluster, operation="stop", status="pending")
    html = admin_client.get("/clusters/dev/").text
    svg = re.search(r'<svg class="chart".*?</svg>', html, re.S)
    assert svg is not None
    assert "<title>Operations on dev, oldest first</title>" in svg.group(0)
    assert svg.group(0).count('<rect class="chart-success"') == 1
    assert ">42 s</text>" in svg.group(0)


def test_the_system_page_draws_its_charts(alias: str, admin_client: Client) -> None:
    html = admin_client.get("/system/").text
    if "postgres" in settings.DATABASES:
        assert "<strong>Database state, last 24 hours</strong>" in html
    else:
        assert "PostgreSQL is not configured: SQLite only." in html
    assert "<strong>PostgreSQL probe latency</strong>" in html
    assert "<strong>Journal: changes waiting to be replayed</strong>" in html


# A Kindler with no PostgreSQL configured (PG_HOST empty): the postgres alias
# does not exist, and the pages and what they poll still answer.
SQLITE_ONLY = """
import json
import django
django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_test_environment
from clusters.models import Cluster, OperationLog
setup_test_environment()
call_command("migrate", verbosity=0)
Cluster.objects.create(name="dev")
OperationLog.objects.create(cluster_name="dev", operation="create", status="success", hooks="[]")
client = Client()
client.force_login(User.objects.create_user("operator", password="x"))
print(json.dumps({url: client.get(url).status_code for url in (
    "/", "/live/", "/clusters/dev/", "/clusters/dev/live/", "/system/"
)}))
"""


@pytest.mark.slow
def test_the_pages_and_their_live_parts_answer_without_postgres(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kindler.settings",
        "PG_HOST": "",
        "SQLITE_PATH": str(tmp_path / "kindler.db"),
        "KINDLER_MIRROR_INTERVAL": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", SQLITE_ONLY],
        env=env,
        cwd=Path(settings.BASE_DIR),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "/": 200,
        "/live/": 200,
        "/clusters/dev/": 200,
        "/clusters/dev/live/": 200,
        "/system/": 200,
    }
