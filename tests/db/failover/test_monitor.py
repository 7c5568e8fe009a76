from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator

import pytest
from django.db import DatabaseError, connections
from django.test import override_settings

from kindler.db.failover.monitor import State, monitor, probe_postgres, report_outage
from kindler.db.models import KnownDatabase
from tests.conftest import BOTH, wait_for_state
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)

calls: list[str] = []


def record_recovery() -> None:
    calls.append("replayed")


def end_own_backend_once() -> None:
    """Recover, but lose the connection the first time, as pg_terminate_backend would."""
    if "ended" not in calls:
        calls.append("ended")
        with connections["postgres"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
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
    # A file that never met this PostgreSQL: what the tests before left in it
    # (a restore or a restart they staged) would log a warning this start does
    # not owe.
    KnownDatabase.objects.using("sqlite").all().delete()
    with caplog.at_level(logging.INFO, logger="kindler.db"):
        assert monitor.active_alias() == "postgres"
    # So the start also logs the merge ("Checking PostgreSQL (adopted) ...
    # first contact", and "Carried ..." when the file holds rows), at INFO.
    messages = [
        r.getMessage()
        for r in caplog.records
        if not r.getMessage().startswith(("Checking PostgreSQL (adopted)", "Carried "))
    ]
    # A new leader checks PostgreSQL (recovery) once before serving from it.
    assert messages[0].startswith("Database state primary -> recovering after")
    assert messages[0].endswith("checking PostgreSQL at start (active: sqlite)")
    assert messages[1].startswith("Database state recovering -> primary after")
    assert messages[2:] == ["Using PostgreSQL backend (primary)"]
    # Every start does this: it is progress, not a warning.
    assert {r.levelname for r in caplog.records} == {"INFO"}


def test_startup_logs_the_failure_and_sqlite_as_fallback(
    pg: PostgresServer, fresh_monitor: None, caplog: pytest.LogCaptureFixture
) -> None:
    pg.stop("immediate")
    with caplog.at_level(logging.INFO, logger="kindler.db"):
        assert monitor.active_alias() == "sqlite"
    messages = [r.getMessage() for r in caplog.records]
    # The state left by the previous run said primary; the first probe corrects it.
    assert messages[0].startswith("Database state primary -> fallback after")
    assert caplog.records[0].levelname == "WARNING"
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


def test_coming_back_after_an_outage_is_a_warning(
    fresh_monitor: None, caplog: pytest.LogCaptureFixture
) -> None:
    monitor.check_now()
    monitor.mark_down("test outage")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kindler.db"):
        assert monitor.check_now().state is State.PRIMARY
    switches = [
        (r.levelname, r.getMessage().split(" after ")[0])
        for r in caplog.records
        if r.getMessage().startswith("Database state")
    ]
    assert switches == [
        ("WARNING", "Database state fallback -> recovering"),
        ("WARNING", "Database state recovering -> primary"),
    ]


@override_settings(
    KINDLER_RECOVERY_HOOKS=["tests.db.failover.test_monitor.fail_recovery"],
    KINDLER_HEALTH_INTERVAL=5,
)
def test_a_failing_recovery_hook_keeps_sqlite_active(
    fresh_monitor: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="kindler.db"):
        monitor.active_alias()  # the start-up check runs the failing hook
        monitor.stop()
        snapshot = monitor.check_now()  # waits before the next attempt
    assert (snapshot.state, snapshot.active) == (State.RECOVERING, "sqlite")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "Recovery failed, staying on SQLite (attempt 1, next in 5 s): "
        "journal entry 7 cannot be applied"
    ]


@override_settings(KINDLER_RECOVERY_HOOKS=["tests.db.failover.test_monitor.end_own_backend_once"])
def test_a_recovery_whose_connection_is_ended_runs_again(fresh_monitor: None) -> None:
    monitor.stop()
    monitor.mark_down("test outage")
    calls.clear()
    assert monitor.check_now().state is State.PRIMARY
    transitions = [(t.source, t.target) for t in monitor.snapshot().transitions]
    assert transitions[-2:] == [
        (State.FALLBACK, State.RECOVERING),
        (State.RECOVERING, State.PRIMARY),
    ]
    assert calls == ["ended", "replayed", "replayed"]


def ended_connection_error() -> DatabaseError:
    """Return the error a query gets when its backend was ended."""
    try:
        with connections["postgres"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    except DatabaseError as exc:
        return exc
    raise AssertionError("the backend was not ended")


def test_an_ended_connection_is_reported_but_does_not_switch(fresh_monitor: None) -> None:
    monitor.stop()
    assert monitor.active_alias() == "postgres"
    generation = len(monitor.snapshot().transitions)
    assert report_outage(ended_connection_error(), "reconciler") is True
    snapshot = monitor.snapshot()
    assert (snapshot.state, len(snapshot.transitions)) == (State.PRIMARY, generation)


def test_a_failed_query_switches_once_the_probe_confirms_it(
    pg: PostgresServer, fresh_monitor: None
) -> None:
    monitor.stop()
    assert monitor.active_alias() == "postgres"
    error = ended_connection_error()
    pg.stop("immediate")
    assert report_outage(error, "reconciler") is True
    snapshot = monitor.snapshot()
    assert snapshot.state is State.FALLBACK
    assert snapshot.transitions[-1].cause.startswith(
        "reconciler: FATAL: terminating connection due to administrator command"
    )
    assert "; probe: " in snapshot.transitions[-1].cause


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


@pytest.mark.postgres
def test_no_probes_keeps_the_probing_thread_stopped_after_a_reset(
    request: pytest.FixtureRequest,
) -> None:
    monitor.reset()
    request.getfixturevalue("no_probes")
    # The first query after a reset starts the monitor; it must not start probing again.
    assert monitor.active_alias() == "postgres"
    assert [
        thread.name for thread in threading.enumerate() if thread.name == "kindler-health"
    ] == []
