from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator

import pytest
from django.test import override_settings

from kindler.db.failover.monitor import State, monitor, probe_postgres
from tests.conftest import BOTH, wait_for_state
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)

calls: list[str] = []


def record_recovery() -> None:
    calls.append("replayed")


def fail_recovery() -> None:
    raise RuntimeError("journal entry 7 cannot be applied")


@pytest.fixture
def fresh_monitor() -> Iterator[None]:
    """A monitor that starts over, as in a new process."""
    monitor.reset()
    calls.clear()
    yield
    monitor.reset()


def test_the_probe_measures_latency_of_a_reachable_server() -> None:
    probe = probe_postgres()
    assert (probe.reachable, probe.error) == (True, None)
    assert probe.latency_ms is not None


def test_the_probe_reports_why_an_unreachable_server_failed(pg: PostgresServer) -> None:
    pg.stop("immediate")
    probe = probe_postgres()
    assert (probe.reachable, probe.latency_ms) == (False, None)
    assert "Connection refused" in str(probe.error)


def test_startup_logs_postgres_as_primary(
    fresh_monitor: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kindler.db"):
        assert monitor.active_alias() == "postgres"
    messages = [r.getMessage() for r in caplog.records]
    # A new leader checks PostgreSQL (recovery) once before serving from it.
    assert messages[0].startswith("Database state primary -> recovering after")
    assert messages[0].endswith("checking PostgreSQL at start (active: sqlite)")
    assert messages[1].startswith("Database state recovering -> primary after")
    assert messages[2:] == ["Using PostgreSQL backend (primary)"]


def test_startup_logs_the_failure_and_sqlite_as_fallback(
    pg: PostgresServer, fresh_monitor: None, caplog: pytest.LogCaptureFixture
) -> None:
    pg.stop("immediate")
    with caplog.at_level(logging.INFO, logger="kindler.db"):
        assert monitor.active_alias() == "sqlite"
    messages = [r.getMessage() for r in caplog.records]
    # The state left by the previous run said primary; the first probe corrects it.
    assert messages[0].startswith("Database state primary -> fallback after")
    assert messages[1].startswith("PostgreSQL connection failed: Connection refused")
    assert messages[2:] == ["Using SQLite backend (fallback)"]


def test_startup_log_never_shows_the_password(
    pg: PostgresServer, fresh_monitor: None, caplog: pytest.LogCaptureFixture, settings
) -> None:
    settings.DATABASES["postgres"]["PASSWORD"] = "wrong-secret-pw"
    try:
        with caplog.at_level(logging.INFO, logger="kindler.db"):
            monitor.active_alias()
    finally:
        settings.DATABASES["postgres"]["PASSWORD"] = pg.password
    assert "password authentication failed" in caplog.text
    assert "wrong-secret-pw" not in caplog.text


def test_a_failed_probe_switches_to_fallback(pg: PostgresServer) -> None:
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    assert monitor.active_alias() == "sqlite"


def test_mark_down_switches_at_once_and_records_the_cause() -> None:
    monitor.mark_down("request failed: server closed the connection")
    snapshot = monitor.snapshot()
    assert (snapshot.state, snapshot.active) == (State.FALLBACK, "sqlite")
    assert snapshot.transitions[-1].cause == "request failed: server closed the connection"


@override_settings(KINDLER_RECOVERY_HOOKS=["tests.db.failover.test_monitor.record_recovery"])
def test_recovery_runs_the_hooks_then_returns_to_primary(fresh_monitor: None) -> None:
    monitor.stop()
    monitor.mark_down("test outage")
    calls.clear()  # the start-up check above ran the hooks too
    assert monitor.check_now().state is State.PRIMARY
    transitions = [(t.source, t.target) for t in monitor.snapshot().transitions]
    assert transitions[-2:] == [
        (State.FALLBACK, State.RECOVERING),
        (State.RECOVERING, State.PRIMARY),
    ]
    # Once for the bulk of the journal, once under SQLite's lock for the rest.
    assert calls == ["replayed", "replayed"]


@override_settings(KINDLER_RECOVERY_HOOKS=["tests.db.failover.test_monitor.fail_recovery"])
def test_a_failing_recovery_hook_keeps_sqlite_active(fresh_monitor: None) -> None:
    monitor.stop()
    monitor.mark_down("test outage")
    snapshot = monitor.check_now()
    assert (snapshot.state, snapshot.active) == (State.RECOVERING, "sqlite")


def test_the_probing_thread_brings_routing_back_by_itself(pg: PostgresServer) -> None:
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    pg.start()
    threads = [t.name for t in threading.enumerate()]
    assert "kindler-health" in threads
    # No check_now() here: the background thread alone must notice.
    deadline = 50
    while monitor.snapshot().state is not State.PRIMARY and deadline:
        threading.Event().wait(0.2)
        deadline -= 1
    assert monitor.snapshot().state is State.PRIMARY


def test_a_forked_process_starts_its_own_probing_thread() -> None:
    monitor.active_alias()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        alias = monitor.active_alias()
        alive = any(t.name == "kindler-health" and t.is_alive() for t in threading.enumerate())
        os.write(write_end, f"{alias} {alive}".encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    assert answer == "postgres True"
