"""Post-operation hooks (clusters/hooks.py), run by the reconciler with the stand-in provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clusters import lifecycle
from clusters.hooks import claims_in, hook_paths, time_budget
from clusters.models import Cluster, OperationLog
from clusters.reconciler import Reconciler
from tests.conftest import BOTH
from tests.factories import cluster_fields, make_cluster, make_superuser
from tests.fakes import FakeTools

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


@pytest.fixture
def hooks_dir(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hooks folder Kindler runs, and HOOK_OUT, a folder the hooks write into."""
    folder = tmp_path / "hooks"
    folder.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    settings.KINDLER_HOOKS_DIR = str(folder)
    settings.KINDLER_HOOK_TIMEOUT = 10.0
    settings.KINDLER_LOG_FLUSH_INTERVAL = 0.1
    settings.KINDLER_CHILD_ENV = [*settings.KINDLER_CHILD_ENV, "HOOK_OUT"]
    monkeypatch.setenv("HOOK_OUT", str(out))
    return folder


def hook(folder: Path, name: str, body: str, executable: bool = True) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def out(hooks_dir: Path, name: str) -> str:
    return (hooks_dir.parent / "out" / name).read_text()


def results(log: OperationLog) -> list[dict[str, Any]]:
    assert log.hook_results is not None
    return log.hook_results


def create(name: str = "dev") -> tuple[Cluster, OperationLog]:
    cluster, task = lifecycle.request_create(**cluster_fields(name=name))
    Reconciler().run_once()
    return Cluster.objects.get(pk=cluster.pk), OperationLog.objects.get(uid=task.uid)


def test_hooks_run_in_name_order_and_only_executable_visible_files(
    alias: str, fakes: FakeTools, hooks_dir: Path
) -> None:
    for name in ("20-second", "10-first", ".hidden"):
        hook(hooks_dir, name, f'echo {name} >> "$HOOK_OUT/order"')
    hook(hooks_dir, "15-not-executable", 'echo 15 >> "$HOOK_OUT/order"', executable=False)
    (hooks_dir / "05-folder").mkdir()
    _cluster, log = create()
    assert out(hooks_dir, "order") == "10-first\n20-second\n"
    assert [entry["hook"] for entry in results(log)] == ["10-first", "20-second"]
    assert [path.name for path in hook_paths(hooks_dir)] == ["10-first", "20-second"]


def test_a_hook_reads_the_cluster_as_json_on_stdin(
    alias: str, fakes: FakeTools, hooks_dir: Path
) -> None:
    hook(hooks_dir, "10-stdin", 'cat > "$HOOK_OUT/stdin.json"')
    cluster, _log = create()
    assert json.loads(out(hooks_dir, "stdin.json")) == {
        "uid": str(cluster.uid),
        "name": "dev",
        "provider": "k3d",
        "node_port": cluster.node_port,
        "pf_port": cluster.pf_port,
        "http_port": cluster.http_port,
        "https_port": cluster.https_port,
        "subnet": cluster.subnet,
        "server_ip": "172.19.0.2",
        "register_portainer": True,
        "haproxy_route": True,
        "register_argocd": True,
        "desired_state": "present",
        "actual_state": "running",
    }


def test_a_hook_gets_the_operation_and_the_cluster_fields_in_its_environment(
    alias: str, fakes: FakeTools, hooks_dir: Path
) -> None:
    hook(hooks_dir, "10-env", 'env | grep -E "^KINDLER_(OPERATION|CLUSTER_)" | sort >"$HOOK_OUT/e"')
    cluster, _task = lifecycle.request_create(
        **cluster_fields(name="dev", register_argocd=False, subnet="172.30.0.0/24")
    )
    Reconciler().run_once()
    assert out(hooks_dir, "e").splitlines() == [
        "KINDLER_CLUSTER_ACTUAL_STATE=running",
        "KINDLER_CLUSTER_DESIRED_STATE=present",
        "KINDLER_CLUSTER_HAPROXY_ROUTE=true",
        f"KINDLER_CLUSTER_HTTPS_PORT={cluster.https_port}",
        f"KINDLER_CLUSTER_HTTP_PORT={cluster.http_port}",
        "KINDLER_CLUSTER_NAME=dev",
        f"KINDLER_CLUSTER_NODE_PORT={cluster.node_port}",
        f"KINDLER_CLUSTER_PF_PORT={cluster.pf_port}",
        "KINDLER_CLUSTER_PROVIDER=k3d",
        "KINDLER_CLUSTER_REGISTER_ARGOCD=false",
        "KINDLER_CLUSTER_REGISTER_PORTAINER=true",
        "KINDLER_CLUSTER_SERVER_IP=172.30.0.2",
        "KINDLER_CLUSTER_SUBNET=172.30.0.0/24",
        f"KINDLER_CLUSTER_UID={cluster.uid}",
        "KINDLER_OPERATION=create",
    ]


def test_a_failing_hook_warns_and_leaves_the_operation_done(
    alias: str, fakes: FakeTools, hooks_dir: Path
) -> None:
    hook(hooks_dir, "10-fails", "echo 'portainer said 401'; exit 3")
    hook(hooks_dir, "20-runs-anyway", 'echo ran > "$HOOK_OUT/after"')
    cluster, log = create()
    assert (cluster.actual_state, cluster.reconcile_error) == ("running", "")
    assert (log.status, log.error_message) == ("success", "")
    assert [(e["hook"], e["status"], e["exit_code"]) for e in results(log)] == [
        ("10-fails", "failed", 3),
        ("20-runs-anyway", "ok", 0),
    ]
    assert log.hook_warning == "Hook 10-fails did not succeed; the operation itself did."
    assert out(hooks_dir, "after") == "ran\n"
    lines = log.log_output.splitlines()
    start = lines.index("# hook 10-fails")
    assert lines[start + 1] == "portainer said 401"
    assert lines[start + 2].startswith("# hook 10-fails: failed with exit status 3 in ")
    assert fakes.running() == {"dev": True}


def test_a_hook_past_its_timeout_is_killed_and_warns(
    alias: str, fakes: FakeTools, hooks_dir: Path, settings: Any
) -> None:
    settings.KINDLER_HOOK_TIMEOUT = 0.5
    hook(hooks_dir, "10-slow", 'echo started; sleep 30; echo finished > "$HOOK_OUT/slow"')
    cluster, log = create()
    assert cluster.actual_state == "running"
    assert log.status == "success"
    assert [(e["hook"], e["status"], e["exit_code"], e["seconds"]) for e in results(log)] == [
        ("10-slow", "timeout", None, 0.5)
    ]
    assert log.log_output.endswith(
        "# hook 10-slow\nstarted\n# hook 10-slow: timed out after 0.5 s and was killed\n"
    )
    assert not (hooks_dir.parent / "out" / "slow").exists()


def test_no_hook_runs_after_a_failed_operation(
    alias: str, fakes: FakeTools, hooks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook(hooks_dir, "10-record", 'echo ran > "$HOOK_OUT/ran"')
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "k3d:create")
    _cluster, log = create()
    assert (log.status, log.hooks) == ("failed", None)
    assert not (hooks_dir.parent / "out" / "ran").exists()


def test_hooks_run_after_stop_start_and_delete_with_the_operation_named(
    alias: str, fakes: FakeTools, hooks_dir: Path
) -> None:
    hook(
        hooks_dir,
        "10-record",
        'echo "$KINDLER_OPERATION $KINDLER_CLUSTER_ACTUAL_STATE" >> "$HOOK_OUT/ops"',
    )
    cluster = make_cluster(name="dev", actual_state="running")
    fakes.add("dev")
    lifecycle.request_stop(cluster)
    Reconciler().run_once()
    lifecycle.request_start(Cluster.objects.get(pk=cluster.pk))
    Reconciler().run_once()
    lifecycle.request_delete(Cluster.objects.get(pk=cluster.pk))
    Reconciler().run_once()
    assert out(hooks_dir, "ops") == "stop stopped\nstart running\ndelete absent\n"
    assert not Cluster.objects.filter(name="dev").exists()


def test_a_hook_says_what_it_registered_and_its_escapes_are_stripped(
    alias: str, fakes: FakeTools, hooks_dir: Path
) -> None:
    hook(
        hooks_dir,
        "10-portainer",
        r"printf '\033[32mkindler: registered portainer endpoint 7\033[0m\n'",
    )
    _cluster, log = create()
    claims = results(log)[0]["claims"]
    assert claims == {"portainer": {"state": "registered", "detail": "endpoint 7"}}
    assert "kindler: registered portainer endpoint 7\n" in log.log_output
    assert "\x1b" not in log.log_output


def test_without_a_hooks_dir_nothing_runs(alias: str, fakes: FakeTools, settings: Any) -> None:
    settings.KINDLER_HOOKS_DIR = ""
    _cluster, log = create()
    assert (log.status, log.hooks) == ("success", None)


def test_a_missing_hooks_dir_warns(
    alias: str, fakes: FakeTools, settings: Any, tmp_path: Path
) -> None:
    settings.KINDLER_HOOKS_DIR = str(tmp_path / "nowhere")
    _cluster, log = create()
    assert log.status == "success"
    assert log.hook_warning == (
        f"Hook {tmp_path / 'nowhere'} did not succeed; the operation itself did."
    )
    assert f"# hooks: cannot read {tmp_path / 'nowhere'}: No such file or directory\n" in (
        log.log_output
    )


def test_claims_are_read_from_whole_lines_only() -> None:
    output = (
        "kindler: registered portainer endpoint 3\n"
        "said kindler: registered argocd\n"
        "kindler: unregistered haproxy\n"
        "kindler: registered grafana\n"
    )
    assert claims_in(output) == {
        "portainer": {"state": "registered", "detail": "endpoint 3"},
        "haproxy": {"state": "unregistered", "detail": ""},
    }


@pytest.mark.postgres
def test_hook_results_written_on_sqlite_reach_postgres_and_come_back_as_lists() -> None:
    from kindler.db.failover.pinning import pinned_alias
    from kindler.db.sync.mirror import mirror
    from kindler.db.sync.replay import replay

    stored = [{"hook": "10-a", "status": "ok", "exit_code": 0, "seconds": 0.1, "claims": {}}]
    with pinned_alias("sqlite"):
        local = make_cluster(name="dev")
        OperationLog(cluster_name="dev", operation="create", hooks=json.dumps(stored)).save()
    replay()
    assert OperationLog.objects.using("postgres").get(cluster_name="dev").hook_results == stored
    remote = OperationLog(cluster_name=local.name, operation="stop", hooks=json.dumps(stored))
    remote.save(using="postgres")
    mirror(full=True)
    assert OperationLog.objects.using("sqlite").get(uid=remote.uid).hook_results == stored


def test_the_time_hooks_may_take_counts_each_hook_once(hooks_dir: Path, settings: Any) -> None:
    settings.KINDLER_HOOK_TIMEOUT = 30.0
    for name in ("10-a", "20-b"):
        hook(hooks_dir, name, "true")
    hook(hooks_dir, "README", "", executable=False)
    assert time_budget() == 60.0
    settings.KINDLER_HOOKS_DIR = ""
    assert time_budget() == 0.0


def test_the_api_lists_each_operation_s_hooks_and_warning(
    alias: str, fakes: FakeTools, hooks_dir: Path, admin_client: Any
) -> None:
    hook(hooks_dir, "10-fails", "exit 4")
    create()
    [entry] = admin_client.get("/api/clusters/dev/operations").json()
    assert [(h["hook"], h["status"], h["exit_code"]) for h in entry["hooks"]] == [
        ("10-fails", "failed", 4)
    ]
    assert entry["warning"] == "Hook 10-fails did not succeed; the operation itself did."


def test_a_hook_never_sees_kindlers_secrets(
    alias: str, fakes: FakeTools, hooks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SECRET_KEY", "PG_PASSWORD", "KINDLER_API_TOKEN", "KINDLER_ADMIN_PASSWORD"):
        monkeypatch.setenv(name, f"{name.lower()}-value")
    hook(hooks_dir, "10-env", "env")
    _cluster, log = create()
    assert "-value" not in log.log_output
    assert f"HOOK_OUT={hooks_dir.parent / 'out'}\n" in log.log_output


def test_a_hook_printing_much_keeps_its_beginning_and_end_and_says_what_was_left_out(
    alias: str, fakes: FakeTools, hooks_dir: Path
) -> None:
    hook(
        hooks_dir, "10-loud", "echo first; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo last"
    )
    _cluster, log = create()
    assert results(log)[0]["status"] == "ok"
    section = log.log_output[log.log_output.index("# hook 10-loud\n") :]
    assert section.startswith("# hook 10-loud\nfirst\nxxx")
    assert "characters of output omitted ...]\n" in section
    assert "x\nlast\n# hook 10-loud: ok in " in section
    assert len(log.log_output) < 260_000
