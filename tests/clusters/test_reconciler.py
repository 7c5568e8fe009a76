"""The reconciler (clusters/reconciler.py), in this process, on both databases."""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from clusters import lifecycle
from clusters.drivers import DriverError
from clusters.models import Cluster, OperationLog
from clusters.reconciler import (
    INTERRUPTED,
    PassReport,
    Reconciler,
    backoff_seconds,
    decide,
)
from kindler.db.failover.pinning import pinned_alias
from tests.conftest import BOTH, wait_for
from tests.factories import cluster_fields, make_cluster, make_operation
from tests.fakes import FakeTools
from tests.pgserver import PostgresServer, free_port

pytestmark = pytest.mark.django_db(databases=BOTH)

ROLLED_BACK = "FATA[0002] Cluster creation FAILED, all changes have been rolled back!"


@pytest.fixture(autouse=True)
def _quick(settings: Any) -> None:
    settings.KINDLER_LOG_FLUSH_INTERVAL = 0.1
    settings.KINDLER_RECONCILE_BACKOFF = 10.0


def reconcile() -> PassReport:
    return Reconciler().run_once()


def create(**overrides: Any) -> tuple[Cluster, OperationLog]:
    return lifecycle.request_create(**cluster_fields(**overrides))


def existing(fakes: FakeTools, running: bool = True, **overrides: Any) -> Cluster:
    """A cluster the provider already runs (or keeps stopped), recorded as such."""
    state = "running" if running else "stopped"
    cluster = make_cluster(actual_state=state, **overrides)
    fakes.add(cluster.name, cluster.provider, running)
    return cluster


def fresh(cluster: Cluster) -> Cluster:
    return Cluster.objects.get(pk=cluster.pk)


def log_of(task: OperationLog) -> OperationLog:
    return OperationLog.objects.get(uid=task.uid)


@pytest.fixture
def listening() -> Iterator[int]:
    """A port this test listens on, as another program would."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("desired", "actual", "operation"),
    [
        ("present", "absent", "create"),
        ("present", "stopped", "start"),
        ("present", "running", None),
        ("stopped", "running", "stop"),
        ("stopped", "absent", "create"),
        ("stopped", "stopped", None),
        ("absent", "running", "delete"),
        ("absent", "stopped", "delete"),
        ("absent", "absent", None),
    ],
)
def test_decide(desired: str, actual: str, operation: str | None) -> None:
    assert decide(desired, actual) == operation


def test_backoff_doubles_up_to_the_ceiling(settings: Any) -> None:
    settings.KINDLER_RECONCILE_BACKOFF_MAX = 60
    assert [backoff_seconds(n) for n in range(1, 6)] == [10, 20, 40, 60, 60]


def test_create_runs_the_command_and_the_cluster_runs(alias: str, fakes: FakeTools) -> None:
    cluster, _task = create(name="dev")
    reconcile()
    assert fakes.actions() == [
        ["k3d", "cluster", "create", "dev", "--servers", "1", "--agents", "0",
         "-p", f"{cluster.http_port}:80@loadbalancer",
         "-p", f"{cluster.https_port}:443@loadbalancer",
         "-p", f"{cluster.pf_port}:30080@server:0", "--wait", "--timeout", "300s"],
    ]  # fmt: skip
    assert (fresh(cluster).actual_state, fresh(cluster).reconcile_error) == ("running", "")
    assert fakes.running() == {"dev": True}


def test_create_records_the_server_nodes_address(alias: str, fakes: FakeTools) -> None:
    cluster, _task = create(name="dev", subnet="10.101.0.0/16")
    reconcile()
    assert fresh(cluster).server_ip == fakes.address("dev") == "10.101.0.2"


def test_a_kind_create_records_the_control_plane_address(alias: str, fakes: FakeTools) -> None:
    fakes.add("other", provider="kind")
    cluster, _task = create(name="qa", provider="kind")
    reconcile()
    assert fresh(cluster).server_ip == fakes.address("qa") == "172.18.0.3"


def test_start_records_the_address_the_server_node_has_now(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes, running=False, name="dev", server_ip="10.9.9.9")
    lifecycle.request_start(cluster)
    reconcile()
    assert fresh(cluster).server_ip == fakes.address("dev") == "172.19.0.2"


def test_stop_keeps_the_recorded_address(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes, name="dev", server_ip="172.19.0.2")
    lifecycle.request_stop(cluster)
    reconcile()
    assert (fresh(cluster).actual_state, fresh(cluster).server_ip) == ("stopped", "172.19.0.2")


def test_an_address_that_cannot_be_read_is_said_in_the_log_and_the_create_succeeds(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, task = create(name="dev")

    def unreadable(self: Any, name: str) -> str:
        raise DriverError("k3d cluster list -o json does not list dev")

    monkeypatch.setattr("clusters.drivers.k3d.K3dDriver.server_ip", unreadable)
    reconcile()
    assert (log_of(task).status, fresh(cluster).server_ip) == ("success", None)
    assert (
        "Kindler could not read the server node's address: "
        "k3d cluster list -o json does not list dev\n"
    ) in log_of(task).log_output


def test_create_records_the_operation_on_the_requested_task(alias: str, fakes: FakeTools) -> None:
    _cluster, task = create(name="dev")
    reconcile()
    log = log_of(task)
    assert (log.status, log.exit_code, log.error_message) == ("success", 0, "")
    assert log.command == " ".join(fakes.actions()[0])
    assert log.log_output.splitlines()[0] == f"$ {log.command}"
    assert log.log_output.splitlines()[-1] == "kubectl cluster-info --context k3d-dev"
    assert log.started_at is not None
    assert log.completed_at is not None
    assert log.completed_at >= log.started_at
    assert OperationLog.objects.filter(cluster_name="dev").count() == 1


def test_create_sets_last_reconciled_at(alias: str, fakes: FakeTools) -> None:
    before = timezone.now()
    cluster, _ = create()
    reconcile()
    reconciled = fresh(cluster).last_reconciled_at
    assert reconciled is not None
    assert reconciled >= before


def test_a_kind_create_gives_the_config_on_stdin_and_logs_it(alias: str, fakes: FakeTools) -> None:
    cluster, task = create(name="qa", provider="kind")
    reconcile()
    config = fakes.stdin_of(["kind", "create", "cluster"])
    assert config is not None
    assert f"    hostPort: {cluster.http_port}\n" in config
    assert log_of(task).log_output.startswith(
        "$ kind create cluster --name qa --config - --wait 300s\n"
        "# configuration given on stdin:\n" + config
    )
    assert fresh(cluster).actual_state == "running"


def test_delete_removes_the_cluster_and_keeps_its_history(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes, name="old")
    task = lifecycle.request_delete(cluster)
    reconcile()
    assert fakes.actions() == [["k3d", "cluster", "delete", "old"]]
    assert fakes.clusters() == {}
    assert not Cluster.objects.filter(name="old").exists()
    assert log_of(task).status == "success"


def test_a_cluster_marked_absent_that_the_provider_lacks_is_just_removed(
    alias: str, fakes: FakeTools
) -> None:
    cluster = make_cluster(name="gone")
    task = lifecycle.request_delete(cluster)
    reconcile()
    assert fakes.actions() == []
    assert not Cluster.objects.filter(name="gone").exists()
    assert (log_of(task).status, log_of(task).log_output) == (
        "success",
        "Nothing to run: gone is already absent.",
    )


def test_stop_then_start(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes, name="dev")
    stop_task = lifecycle.request_stop(cluster)
    reconcile()
    assert (fresh(cluster).actual_state, fakes.clusters()["dev"]["running"]) == ("stopped", False)
    start_task = lifecycle.request_start(fresh(cluster))
    reconcile()
    assert (fresh(cluster).actual_state, fakes.clusters()["dev"]["running"]) == ("running", True)
    assert fakes.actions() == [
        ["k3d", "cluster", "stop", "dev"],
        ["k3d", "cluster", "start", "dev"],
    ]
    assert [log_of(stop_task).status, log_of(start_task).status] == ["success", "success"]


def test_kind_stop_stops_the_node_container(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes, name="qa", provider="kind")
    lifecycle.request_stop(cluster)
    reconcile()
    assert fakes.actions() == [["docker", "stop", "qa-control-plane"]]
    assert fresh(cluster).actual_state == "stopped"


def test_a_kind_cluster_through_its_whole_life(alias: str, fakes: FakeTools) -> None:
    cluster, _ = create(name="qa", provider="kind")
    reconcile()
    lifecycle.request_stop(fresh(cluster))
    reconcile()
    assert fresh(cluster).actual_state == "stopped"
    lifecycle.request_start(fresh(cluster))
    reconcile()
    assert fresh(cluster).actual_state == "running"
    lifecycle.request_delete(fresh(cluster))
    reconcile()
    assert [argv[:3] for argv in fakes.actions()] == [
        ["kind", "create", "cluster"],
        ["docker", "stop", "qa-control-plane"],
        ["docker", "start", "qa-control-plane"],
        ["kind", "delete", "cluster"],
    ]
    assert (fakes.clusters(), Cluster.objects.filter(name="qa").exists()) == ({}, False)


def test_a_delete_asked_for_while_a_create_runs_follows_it(alias: str, fakes: FakeTools) -> None:
    cluster, task = create(name="dev")
    OperationLog.objects.filter(uid=task.uid).update(status="running", started_at=timezone.now())
    lifecycle.request_delete(fresh(cluster))
    reconcile()
    assert fakes.actions() == []
    OperationLog.objects.filter(uid=task.uid).update(status="success")
    fakes.add("dev")
    reconcile()
    assert fakes.actions() == [["k3d", "cluster", "delete", "dev"]]


def test_a_failed_create_marks_the_cluster_failed_with_the_error(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "create")
    cluster, task = create(name="dev")
    reconcile()
    error = f"k3d exited with status 1: {ROLLED_BACK}"
    assert (log_of(task).status, log_of(task).exit_code, log_of(task).error_message) == (
        "failed",
        1,
        error,
    )
    assert (fresh(cluster).actual_state, fresh(cluster).reconcile_error) == ("failed", error)


def test_a_failure_is_not_retried_before_the_backoff(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "create")
    cluster, _ = create()
    reconcile()
    reconcile()
    assert len(fakes.actions()) == 1
    assert OperationLog.objects.filter(cluster_name=cluster.name).count() == 1
    assert fresh(cluster).actual_state == "failed"


def test_a_failure_is_retried_once_the_backoff_has_passed(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "create")
    cluster, task = create()
    reconcile()
    OperationLog.objects.filter(uid=task.uid).update(
        completed_at=timezone.now() - timedelta(seconds=11)
    )
    monkeypatch.delenv("KINDLER_FAKE_FAIL")
    reconcile()
    assert len(fakes.actions()) == 2
    assert list(
        OperationLog.objects.filter(cluster_name=cluster.name).values_list("status", flat=True)
    ) == ["success", "failed"]
    assert fresh(cluster).actual_state == "running"


def test_the_backoff_grows_with_consecutive_failures(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "create")
    cluster, task = create()
    reconcile()
    # A second failure 15 s ago: the wait is now 20 s, so nothing runs yet.
    ago = timezone.now() - timedelta(seconds=15)
    OperationLog.objects.filter(uid=task.uid).update(started_at=ago, completed_at=ago)
    make_operation(cluster, status="failed", started_at=ago, completed_at=ago)
    reconcile()
    assert len(fakes.actions()) == 1


def test_a_new_request_after_a_failure_runs_at_once(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = existing(fakes, running=False, name="dev")
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "start")
    lifecycle.request_start(cluster)
    reconcile()
    monkeypatch.delenv("KINDLER_FAKE_FAIL")
    lifecycle.request_start(fresh(cluster))
    reconcile()
    assert fakes.actions() == [["k3d", "cluster", "start", "dev"]] * 2
    assert fresh(cluster).actual_state == "running"


def test_a_missing_binary_fails_the_operation(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cluster = make_cluster(actual_state="stopped")
    task = lifecycle.request_start(cluster)
    monkeypatch.setenv("PATH", str(tmp_path))
    report = reconcile()
    missing = "k3d not found on PATH; install it: https://k3d.io/#installation"
    assert (log_of(task).status, log_of(task).error_message) == ("failed", missing)
    assert (fresh(cluster).actual_state, fresh(cluster).reconcile_error) == ("failed", missing)
    assert report.lines[0].startswith(f"start {cluster.name}: failed in ")


def test_a_create_without_the_binary_fails_in_preflight(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _cluster, task = create()
    monkeypatch.setenv("PATH", str(tmp_path))
    reconcile()
    assert log_of(task).error_message == (
        "Preflight failed: provider: k3d not found on PATH; install it: https://k3d.io/#installation"
    )


def test_a_timeout_is_recorded(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.KINDLER_OPERATION_TIMEOUT = 1
    monkeypatch.setenv("KINDLER_FAKE_SLEEP", "30")
    cluster, task = create()
    reconcile()
    assert (log_of(task).status, log_of(task).exit_code) == ("timeout", None)
    assert log_of(task).error_message == (
        "Timed out after 1 s; the command and everything it started were killed."
    )
    assert fresh(cluster).actual_state == "failed"


def test_preflight_fails_a_create_whose_port_is_taken(
    alias: str, fakes: FakeTools, listening: int
) -> None:
    cluster, task = create(http_port=listening)
    reconcile()
    assert fakes.actions() == []
    assert log_of(task).error_message == (
        f"Preflight failed: http_port: port {listening} is in use by another process"
    )
    assert fresh(cluster).reconcile_error == log_of(task).error_message


def test_nothing_to_do_writes_nothing(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes)
    report = reconcile()
    assert (report.actions, report.lines) == (0, [])
    assert fresh(cluster).version == cluster.version
    assert fakes.actions() == []
    assert OperationLog.objects.count() == 0


def test_what_the_provider_reports_is_recorded(alias: str, fakes: FakeTools) -> None:
    cluster = make_cluster(desired_state="stopped", actual_state="unknown")
    fakes.add(cluster.name, running=False)
    reconcile()
    assert fresh(cluster).actual_state == "stopped"
    assert fresh(cluster).last_reconciled_at is not None
    assert fakes.actions() == []


def test_a_cluster_stopped_behind_kindlers_back_is_started(alias: str, fakes: FakeTools) -> None:
    existing(fakes, name="dev")
    fakes.add("dev", running=False)
    reconcile()
    assert fakes.actions() == [["k3d", "cluster", "start", "dev"]]


def test_a_request_that_needs_nothing_is_closed(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes, name="dev")
    task = lifecycle.request_start(cluster)
    reconcile()
    assert (log_of(task).status, log_of(task).log_output) == (
        "success",
        "Nothing to run: dev is already running.",
    )


def test_duplicate_requests_run_once(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes, name="dev")
    first = lifecycle.request_stop(cluster)
    second = lifecycle.request_stop(fresh(cluster))
    reconcile()
    assert fakes.actions() == [["k3d", "cluster", "stop", "dev"]]
    assert log_of(first).status == "success"
    assert (log_of(second).status, log_of(second).error_message) == (
        "failed",
        f"Superseded by operation {first.uid}, which ran instead.",
    )


def test_a_cluster_with_a_running_operation_is_left_alone(alias: str, fakes: FakeTools) -> None:
    _cluster, task = create()
    OperationLog.objects.filter(uid=task.uid).update(status="running", started_at=timezone.now())
    reconcile()
    assert fakes.actions() == []


def test_an_abandoned_running_operation_is_failed_and_the_action_retried(
    alias: str, fakes: FakeTools
) -> None:
    cluster, task = create()
    long_ago = timezone.now() - timedelta(seconds=300 + 61)
    OperationLog.objects.filter(uid=task.uid).update(status="running", started_at=long_ago)
    reconcile()
    assert (log_of(task).status, log_of(task).error_message) == (
        "failed",
        "Interrupted: the reconciler running it stopped before it finished.",
    )
    assert len(fakes.actions()) == 1
    assert fresh(cluster).actual_state == "running"


def test_pending_requests_for_a_cluster_no_longer_in_the_inventory_are_closed(
    alias: str, fakes: FakeTools
) -> None:
    cluster = make_cluster(name="ghost")
    task = make_operation(cluster, operation="start")
    Cluster.objects.filter(pk=cluster.pk).delete()
    reconcile()
    assert (log_of(task).status, log_of(task).error_message) == (
        "failed",
        "The cluster is no longer in the inventory.",
    )


def test_when_the_provider_cannot_list_the_requested_action_is_attempted(
    alias: str, fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "list")
    _cluster, task = create(name="dev")
    reconcile()
    assert fakes.actions()[0][:4] == ["k3d", "cluster", "create", "dev"]
    assert log_of(task).status == "success"


def test_reconcile_once_prints_what_it_did(alias: str, fakes: FakeTools) -> None:
    create(name="dev")
    out = StringIO()
    call_command("reconcile", "--once", stdout=out)
    assert re.fullmatch(r"create dev: success in \d+\.\d s\n", out.getvalue())


def test_cluster_stop_command_queues_a_stop(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes, name="dev")
    out = StringIO()
    call_command("cluster", "stop", "dev", stdout=out)
    task = OperationLog.objects.get(cluster_name="dev")
    assert out.getvalue() == f"Cluster dev will be stopped (operation {task.uid}).\n"
    assert (task.operation, task.status, fresh(cluster).desired_state) == (
        "stop",
        "pending",
        "stopped",
    )


def test_cluster_start_command_queues_a_start(alias: str, fakes: FakeTools) -> None:
    existing(fakes, running=False, name="dev", desired_state="stopped")
    out = StringIO()
    call_command("cluster", "start", "dev", stdout=out)
    task = OperationLog.objects.get(cluster_name="dev")
    assert out.getvalue() == f"Cluster dev will be started (operation {task.uid}).\n"
    assert (task.operation, Cluster.objects.get(name="dev").desired_state) == ("start", "present")


def test_cluster_start_refuses_a_cluster_marked_for_deletion(alias: str) -> None:
    make_cluster(name="dev", desired_state="absent")
    with pytest.raises(CommandError, match=r"^Cluster dev is marked for deletion\.$"):
        call_command("cluster", "start", "dev", stdout=StringIO())


# Real reconciler processes, on the databases the tests use.

MANAGE = [sys.executable, str(settings.BASE_DIR / "manage.py")]


def reconciler_env(kindler_env: dict[str, Any], fakes: FakeTools, **knobs: str) -> dict[str, Any]:
    return {**kindler_env, "KINDLER_FAKE_STATE": str(fakes.state), **knobs}


def start_reconciler(env: dict[str, Any], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MANAGE, "reconcile", *args],
        # faulthandler: a reconciler that does not stop prints every thread's stack on SIGABRT.
        env={**env, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, stderr = process.communicate(timeout=30)
        pytest.fail(f"the reconciler did not stop within 60 s; where it was:\n{stderr}")
    assert process.returncode == 0, stderr
    return stdout


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_output_is_in_the_log_while_the_command_runs(
    kindler_env: dict[str, Any], fakes: FakeTools
) -> None:
    _, task = create(name="live")
    process = start_reconciler(reconciler_env(kindler_env, fakes, KINDLER_FAKE_SLEEP="5"), "--once")
    seen = wait_for(
        lambda: OperationLog.objects.filter(
            uid=task.uid, log_output__contains="Creating node"
        ).first()
    )
    assert seen.status == "running"
    assert "live" not in fakes.clusters()
    finish(process)
    assert log_of(task).status == "success"


@pytest.mark.slow
@pytest.mark.parametrize("database", BOTH)
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_concurrent_reconcilers_never_run_one_action_twice(
    kindler_env: dict[str, Any], fakes: FakeTools, database: str
) -> None:
    env = reconciler_env(kindler_env, fakes, KINDLER_FAKE_SLEEP="1")
    if database == "sqlite":
        env["PG_HOST"] = ""
    with pinned_alias(database):
        for index in range(3):
            create(name=f"race-{index}")
    processes = [start_reconciler(env, "--interval", "0.1") for _ in range(3)]
    with pinned_alias(database):
        wait_for(lambda: Cluster.objects.filter(actual_state="running").count() == 3)
    time.sleep(1)  # more passes race over clusters that are already done
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        finish(process)
    assert sorted(argv[3] for argv in fakes.actions()) == ["race-0", "race-1", "race-2"]
    with pinned_alias(database):
        statuses = list(OperationLog.objects.values_list("status", flat=True))
    assert statuses == ["success"] * 3


@pytest.mark.slow
def test_losing_postgres_mid_operation_loses_nothing(
    pg: PostgresServer, kindler_env: dict[str, Any], fakes: FakeTools
) -> None:
    cluster, task = create(name="switch")
    # Committed on PostgreSQL, the new cluster was copied into SQLite at once.
    assert Cluster.objects.using("sqlite").filter(uid=cluster.uid).exists() is True
    process = start_reconciler(reconciler_env(kindler_env, fakes, KINDLER_FAKE_SLEEP="5"), "--once")
    wait_for(
        lambda: OperationLog.objects.filter(uid=task.uid, log_output__contains="Prep").exists()
    )
    pg.stop("immediate")
    finish(process)
    log = OperationLog.objects.using("sqlite").get(uid=task.uid)
    assert (log.status, log.exit_code, log.error_message) == ("success", 0, "")
    assert log.log_output.splitlines()[-1] == "kubectl cluster-info --context k3d-switch"
    saved = Cluster.objects.using("sqlite").get(uid=cluster.uid)
    assert (saved.actual_state, saved.reconcile_error) == ("running", "")


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_sigterm_stops_the_loop_and_the_command_it_runs(
    kindler_env: dict[str, Any], fakes: FakeTools
) -> None:
    _, task = create(name="term")
    env = reconciler_env(kindler_env, fakes, KINDLER_FAKE_SLEEP="60", KINDLER_FAKE_CHILD="1")
    process = start_reconciler(env, "--interval", "0.2")
    wait_for(lambda: (fakes.state / "child.pid").exists())
    child = fakes.child_pid()
    process.send_signal(signal.SIGTERM)
    assert finish(process).splitlines()[-1] == "Reconciler stopped."
    assert (log_of(task).status, log_of(task).error_message) == ("failed", INTERRUPTED)
    assert wait_for(lambda: not process_alive(child), seconds=5)


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split()[2] != "Z"


def test_an_idle_pass_reuses_the_last_listing(alias: str, fakes: FakeTools) -> None:
    existing(fakes)
    reconciler = Reconciler()
    reconciler.run_once()
    reconciler.run_once()
    assert fakes.calls() == [["k3d", "cluster", "list", "-o", "json"]]


def test_a_request_makes_the_pass_list_again_before_acting(alias: str, fakes: FakeTools) -> None:
    cluster = existing(fakes, name="dev")
    reconciler = Reconciler()
    reconciler.run_once()
    lifecycle.request_stop(cluster)
    reconciler.run_once()
    assert fakes.calls() == [
        ["k3d", "cluster", "list", "-o", "json"],
        ["k3d", "cluster", "list", "-o", "json"],
        ["k3d", "cluster", "stop", "dev"],
    ]


def test_the_listing_is_taken_again_after_the_observe_interval(
    alias: str, fakes: FakeTools, settings: Any
) -> None:
    settings.KINDLER_OBSERVE_INTERVAL = 0
    existing(fakes)
    reconciler = Reconciler()
    reconciler.run_once()
    reconciler.run_once()
    assert fakes.calls() == [["k3d", "cluster", "list", "-o", "json"]] * 2


@pytest.mark.slow
def test_the_loop_carries_on_on_sqlite_after_postgres_goes_away(
    pg: PostgresServer, kindler_env: dict[str, Any], fakes: FakeTools
) -> None:
    process = start_reconciler(reconciler_env(kindler_env, fakes), "--interval", "0.2")
    create(name="before")
    wait_for(lambda: "before" in fakes.clusters())
    pg.stop("immediate")
    with pinned_alias("sqlite"):
        create(name="after")
        wait_for(lambda: Cluster.objects.filter(name="after", actual_state="running").exists())
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stdout.splitlines()[-1]) == (0, "Reconciler stopped.")
    assert "Traceback" not in stderr
    assert sorted(fakes.clusters()) == ["after", "before"]


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_run_command_stops_the_reconciler_with_the_web_server(
    kindler_env: dict[str, Any], fakes: FakeTools
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **reconciler_env(kindler_env, fakes),
        "KINDLER_BIND": f"127.0.0.1:{port}",
        "KINDLER_WS_BIND": f"127.0.0.1:{free_port()}",
    }
    env.pop("PYTHONUNBUFFERED", None)  # buffered, as under a service manager
    serve = subprocess.Popen(
        [*MANAGE, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        create(name="served")
        wait_for(lambda: "served" in fakes.clusters(), seconds=60)
        # Printed while it runs, not at exit: stdout is a pipe here, as under a service manager.
        assert serve.stdout is not None
        assert select.select([serve.stdout], [], [], 30)[0] == [serve.stdout]
        early = [serve.stdout.readline().rstrip("\n")]
        while early[-1] != "Starting Kindler (Ctrl-C to stop).":
            early.append(serve.stdout.readline().rstrip("\n"))
    except BaseException:
        serve.terminate()  # stops the web server and the reconciler it started
        serve.wait(timeout=60)
        raise
    started = children_of(serve.pid)
    serve.send_signal(signal.SIGTERM)
    stdout, _ = serve.communicate(timeout=60)
    assert serve.returncode == 0
    assert stdout.splitlines()[-1] == "Reconciler stopped."
    assert len(started) == 3  # the web server, the WebSocket server, the reconciler
    assert [pid for pid in started if process_alive(pid)] == []


def test_a_missing_binary_is_logged_once_not_every_pass(
    alias: str,
    fakes: FakeTools,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    settings.KINDLER_OBSERVE_INTERVAL = 0
    make_cluster(desired_state="stopped", actual_state="stopped")
    monkeypatch.setenv("PATH", str(tmp_path))
    reconciler = Reconciler()
    with caplog.at_level("WARNING", logger="kindler.reconciler"):
        for _ in range(3):
            reconciler.run_once()
    warnings = [r.getMessage() for r in caplog.records if r.name == "kindler.reconciler"]
    assert warnings == ["Cannot list k3d clusters: k3d not found on PATH"]
