"""The bounded connection pool (kindler/db/pool.py) on the real throwaway PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import psycopg2
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test import Client

from kindler.db import status
from kindler.db.failover.monitor import State, monitor
from kindler.db.pool import ConnectionPool, PoolConfig, pool_for
from kindler.db.status import process_connections
from tests.conftest import BOTH, wait_for
from tests.factories import make_superuser
from tests.faults import admin_connection
from tests.pgserver import PostgresServer

# The pool is PostgreSQL's: with SQLite alone there is nothing to pool.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(databases=BOTH, transaction=True)]

TOKEN = "pool-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def configure(monkeypatch: pytest.MonkeyPatch, **bounds: float) -> ConnectionPool:
    """Give the postgres alias a pool with these bounds; return this process's pool."""
    config = {"MIN": 1, "MAX": 3, "TIMEOUT": 5.0, "MAX_IDLE": 60.0, **bounds}
    settings_dict = connections["postgres"].settings_dict
    monkeypatch.setitem(settings_dict, "POOL", config)
    connections["postgres"].close()
    made = pool_for("postgres", settings_dict)
    assert made is not None
    return made


@pytest.fixture
def api(settings: Any) -> Client:
    settings.KINDLER_API_TOKEN = TOKEN
    # Answers as a browser would get them: a handled error is not raised here.
    return Client(raise_request_exception=False)


def server_now(pg: PostgresServer) -> Any:
    """Return the server's clock now."""
    conn = admin_connection(pg)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT now()")
            return cursor.fetchone()[0]
    finally:
        conn.close()


def kindler_backends(pg: PostgresServer, since: Any) -> int:
    """Return how many connections Kindler opened on the server since then (probes excluded)."""
    conn = admin_connection(pg)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kindler' "
                "AND datname = %s AND backend_start >= %s",
                [settings.DATABASES["postgres"]["NAME"], since],
            )
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


class Holders:
    """Threads that each keep one pooled connection until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def hold(self, count: int) -> None:
        for _ in range(count):
            ready = threading.Event()
            thread = threading.Thread(target=self._keep, args=(ready,))
            thread.start()
            assert ready.wait(10)
            self.threads.append(thread)

    def _keep(self, ready: threading.Event) -> None:
        with connections["postgres"].cursor() as cursor:
            cursor.execute("SELECT 1")
        ready.set()
        self.release.wait(30)
        connections["postgres"].close()

    def stop(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(10)
        self.threads = []


@pytest.fixture
def holders() -> Iterator[Holders]:
    found = Holders()
    yield found
    found.stop()


def test_fifty_concurrent_requests_never_hold_more_connections_than_the_bound(
    api: Client, pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, holders: Holders
) -> None:
    made = configure(monkeypatch, MAX=3, TIMEOUT=30.0)
    since = server_now(pg_server)
    # Counted since the process started: compare with what came before.
    before = _events(made)
    statuses: list[int] = []
    peaks = {"pool": 0, "server": 0}
    done = threading.Event()

    def call() -> None:
        statuses.append(Client().get("/api/clusters", headers=AUTH).status_code)
        connections.close_all()

    def watch() -> None:
        while not done.is_set():
            peaks["pool"] = max(peaks["pool"], made.counts()["open"])
            peaks["server"] = max(peaks["server"], kindler_backends(pg_server, since))

    # Every connection taken first, so all fifty requests queue for them.
    holders.hold(3)
    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=call) for _ in range(50)]
    for worker in workers:
        worker.start()
    # Every request queued behind the three held connections.
    wait_for(lambda: made.counts()["waiting"] == 50, 30)
    holders.stop()
    for worker in workers:
        worker.join(60)
    done.set()
    watcher.join(10)
    events = {name: count - before[name] for name, count in _events(made).items()}
    print(f"peaks {peaks}, events {events}, waited {made_wait(made):.3f} s")
    assert statuses == [200] * 50
    assert (peaks["pool"], peaks["server"]) == (3, 3)
    assert (events["opened"], events["waits"], events["timeouts"]) == (3, 50, 0)


def test_an_exhausted_pool_answers_503_within_the_timeout(
    api: Client, monkeypatch: pytest.MonkeyPatch, holders: Holders
) -> None:
    made = configure(monkeypatch, MAX=2, TIMEOUT=1.0)
    before = _events(made)["timeouts"]
    holders.hold(2)
    assert made.counts()["in_use"] == 2
    for method, path in (("get", "/api/clusters"), ("post", "/api/clusters")):
        started = time.monotonic()
        response = getattr(api, method)(path, headers=AUTH, content_type="application/json")
        elapsed = time.monotonic() - started
        assert (response.status_code, response.json()) == (
            503,
            {
                "detail": "Kindler is busy: all 2 PostgreSQL connections of this process stayed "
                "in use for 1 s (PG_POOL_MAX, PG_POOL_TIMEOUT). Nothing was saved; retry in "
                "a moment."
            },
        )
        assert 1.0 <= elapsed < 2.0
    # Busy is not an outage: the instance stays on PostgreSQL.
    assert monitor.snapshot().state is State.PRIMARY
    assert _events(made)["timeouts"] - before == 2


def test_a_connection_given_back_is_used_again(monkeypatch: pytest.MonkeyPatch) -> None:
    made = configure(monkeypatch)
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        first = cursor.fetchone()[0]
    connections["postgres"].close()
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        second = cursor.fetchone()[0]
    connections["postgres"].close()
    assert (first == second, made.counts()["idle"]) == (True, 1)


def test_a_connection_left_in_a_transaction_is_rolled_back_before_reuse(
    pg_server: PostgresServer,
) -> None:
    made = ConnectionPool("test", PoolConfig(minimum=1, maximum=1, timeout=1.0, max_idle=60.0))
    conn = made.acquire(lambda: psycopg2.connect(**pg_server.connect_kwargs()))
    with conn.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE left_behind (x int)")
    made.release(conn)
    again = made.acquire(lambda: pytest.fail("a second connection was opened"))
    with again.cursor() as cursor:
        cursor.execute("SELECT to_regclass('pg_temp.left_behind') IS NULL")
        assert cursor.fetchone() == (True,)
    made.release(again)
    made.clear()


def test_a_dead_idle_connection_is_replaced(pg_server: PostgresServer) -> None:
    made = ConnectionPool("test", PoolConfig(minimum=1, maximum=1, timeout=1.0, max_idle=60.0))
    conn = made.acquire(lambda: psycopg2.connect(**pg_server.connect_kwargs()))
    dead = conn.get_backend_pid()
    made.release(conn)
    admin = admin_connection(pg_server)
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [dead])
    admin.close()
    time.sleep(0.2)
    fresh = made.acquire(lambda: psycopg2.connect(**pg_server.connect_kwargs()))
    assert fresh.get_backend_pid() != dead
    made.release(fresh)
    made.clear()


def test_a_healthy_idle_connection_is_handed_out_without_a_query(
    pg_server: PostgresServer,
) -> None:
    made = ConnectionPool("test", PoolConfig(minimum=1, maximum=1, timeout=1.0, max_idle=60.0))
    conn = made.acquire(lambda: psycopg2.connect(**pg_server.connect_kwargs()))
    conn.autocommit = True  # as Django has it: nothing to roll back when given back
    with conn.cursor() as cursor:
        cursor.execute("SELECT 'the last query'")
    made.release(conn)
    again = made.acquire(lambda: psycopg2.connect(**pg_server.connect_kwargs()))
    assert again is conn
    admin = admin_connection(pg_server)
    with admin.cursor() as cursor:
        pid = conn.get_backend_pid()
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        assert cursor.fetchone() == ("SELECT 'the last query'",)
    admin.close()
    made.release(again)
    made.clear()


def test_connections_from_before_a_server_restart_are_replaced(pg_server: PostgresServer) -> None:
    made = ConnectionPool("test", PoolConfig(minimum=2, maximum=2, timeout=1.0, max_idle=60.0))
    first = made.acquire(lambda: psycopg2.connect(**pg_server.connect_kwargs()))
    second = made.acquire(lambda: psycopg2.connect(**pg_server.connect_kwargs()))
    before = {first.get_backend_pid(), second.get_backend_pid()}
    made.release(first)
    made.release(second)
    pg_server.stop()
    pg_server.start()
    handed = [made.acquire(lambda: psycopg2.connect(**pg_server.connect_kwargs())) for _ in (1, 2)]
    for conn in handed:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] not in before
    assert made.counts() == {"open": 2, "in_use": 2, "idle": 0, "waiting": 0}
    for conn in handed:
        made.release(conn)
    made.clear()


def test_idle_connections_beyond_the_minimum_close_after_max_idle(
    pg_server: PostgresServer,
) -> None:
    made = ConnectionPool("test", PoolConfig(minimum=1, maximum=3, timeout=1.0, max_idle=0.2))
    held = [made.acquire(lambda: psycopg2.connect(**pg_server.connect_kwargs())) for _ in range(3)]
    for conn in held:
        made.release(conn)
    assert made.counts() == {"open": 3, "in_use": 0, "idle": 3, "waiting": 0}
    time.sleep(0.3)
    assert (made.prune(), made.counts()["open"]) == (2, 1)
    made.clear()


def test_falling_back_closes_every_idle_pooled_connection(
    pg: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = configure(monkeypatch)
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT 1")
    connections["postgres"].close()
    assert made.counts()["idle"] == 1
    monitor.mark_down("test outage")
    assert made.counts() == {"open": 0, "in_use": 0, "idle": 0, "waiting": 0}


def test_the_probe_reuses_one_connection_while_postgres_is_healthy(
    pg_server: PostgresServer,
) -> None:
    monitor.check_now()
    before = _probes_opened()
    for _ in range(5):
        assert monitor.check_now().probe.usable is True  # type: ignore[union-attr]
    assert _probes_opened() == before


def test_a_probe_connection_killed_alone_is_replaced_without_an_outage(
    pg_server: PostgresServer,
) -> None:
    monitor.check_now()
    before = _probes_opened()
    admin = admin_connection(pg_server)
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'kindler-health'"
        )
    admin.close()
    snapshot = monitor.check_now()
    assert (snapshot.probe.usable, snapshot.state) == (True, State.PRIMARY)  # type: ignore[union-attr]
    assert _probes_opened() == before + 1


def test_a_paused_server_fails_the_kept_probe_connection_within_the_budget(
    pg: PostgresServer,
) -> None:
    monitor.check_now()
    pg.pause(backends=True)
    started = time.monotonic()
    snapshot = monitor.check_now()
    elapsed = time.monotonic() - started
    pg.resume()
    assert (snapshot.probe.usable, snapshot.state) == (False, State.FALLBACK)  # type: ignore[union-attr]
    assert elapsed < settings.PG_CONNECT_TIMEOUT + 0.5


def test_health_shows_each_process_connections_to_a_token_caller(
    api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, MIN=1, MAX=3)
    monitor.check_now()
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT 1")
    connections["postgres"].close()
    rows = api.get("/api/health", headers=AUTH).json()["database"]["connections"]
    mine = [row for row in rows if row["alias"] == "postgres"]
    assert len(mine) == 1
    # As the request saw it: its own connection (it read the sync status) is in use.
    assert {key: mine[0][key] for key in ("open", "in_use", "idle", "minimum", "maximum")} == {
        "open": 1,
        "in_use": 1,
        "idle": 0,
        "minimum": 1,
        "maximum": 3,
    }
    assert mine[0]["probes_open"] == 1
    assert Client().get("/api/health").json() == {"status": "healthy"}


def test_metrics_show_the_pool(api: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, MIN=1, MAX=3)
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT 1")
    text = api.get("/api/metrics", headers=AUTH).content.decode()
    assert 'kindler_db_pool_connections{alias="postgres",state="in_use"} 1.0' in text
    assert 'kindler_db_pool_limit{alias="postgres",bound="max"} 3.0' in text


def test_dbstatus_lists_each_process_and_the_sizing(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, MIN=1, MAX=3)
    out = StringIO()
    call_command("dbstatus", stdout=out)
    lines = out.getvalue().splitlines()
    start = lines.index("PostgreSQL connections (per process):")
    row = next(r for r in process_connections() if r.alias == "postgres")
    assert next(line for line in lines if line.startswith("  postgres pid")) == (
        f"  postgres pid {row.pid}: {row.open} open, {row.in_use} in use, {row.idle} idle, "
        f"0 waiting (pool 1-3); {row.waits} waits, {row.wait_seconds:.3f} s waited, "
        f"{row.timeouts} timeouts; {row.opened} opened, {row.closed} closed; "
        f"probe {row.probes_open} open, {row.probes_opened} opened"
    )
    assert next(line for line in lines[start:] if line.startswith("Sizing:")) == (
        "Sizing:          1 instance(s) x (4 processes x 3 + 1 probe) = 13 of PostgreSQL's 197"
    )


def test_dbstatus_warns_when_the_instances_need_more_than_max_connections(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, MIN=1, MAX=10)
    settings.KINDLER_INSTANCES = 8
    out = StringIO()
    call_command("dbstatus", "--json", stdout=out)
    budget = json.loads(out.getvalue())["pool"]["budget"]
    assert (budget["total"], budget["available"]) == (328, 197)
    assert budget["warning"] == (
        "8 instance(s) x (4 processes x 10 connections + 1 probe) = 328 connections, more than "
        "PostgreSQL's 197 (max_connections 200 minus 3 reserved): lower PG_POOL_MAX, put "
        "PgBouncer in front, or raise max_connections"
    )


def test_the_system_page_charts_open_and_in_use_connections(
    client: Client, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = tmp_path / "kindler.db.connections"
    monkeypatch.setattr(status, "connection_history_path", lambda: history)
    configure(monkeypatch, MIN=1, MAX=3)
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT 1")
    status.record_connections(force=True)
    connections["postgres"].close()
    status.record_connections(force=True)
    samples = status.connection_history()
    assert [(s["in_use"], s["processes"]) for s in samples] == [(1, 1), (0, 1)]
    client.force_login(make_superuser())
    page = client.get("/system/").content.decode()
    chart = status.connection_chart(samples)
    assert f'<polyline points="{chart.open_points}"' in page
    assert f'<polyline points="{chart.in_use_points}"' in page
    assert "<h2>PostgreSQL connections</h2>" in page


def _events(made: ConnectionPool) -> dict[str, int]:
    row = next(r for r in process_connections() if r.alias == made.alias)
    return {"opened": row.opened, "waits": row.waits, "timeouts": row.timeouts}


def made_wait(made: ConnectionPool) -> float:
    return next(r for r in process_connections() if r.alias == made.alias).wait_seconds


def _probes_opened() -> int:
    rows = [r for r in process_connections() if r.alias == "postgres"]
    return rows[0].probes_opened if rows else 0


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        (
            {"PG_POOL_MIN": "5", "PG_POOL_MAX": "2"},
            "PG_POOL_MIN (5) must be between 0 and PG_POOL_MAX (2), and PG_POOL_MAX 0 "
            "(no pool) or more",
        ),
        (
            {"PG_POOL_MAX": "-1"},
            "PG_POOL_MIN (2) must be between 0 and PG_POOL_MAX (-1), and PG_POOL_MAX 0 "
            "(no pool) or more",
        ),
        ({"PG_POOL_TIMEOUT": "0"}, "PG_POOL_TIMEOUT must be more than 0 seconds, not 0.0"),
    ],
)
def test_bounds_that_cannot_work_stop_the_start_with_one_line(
    kindler_env: dict[str, Any], bounds: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import kindler.settings"],
        env={**kindler_env, **bounds},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (
        1,
        f"django.core.exceptions.ImproperlyConfigured: {message}",
    )


def test_no_pool_keeps_one_persistent_connection_per_thread(kindler_env: dict[str, Any]) -> None:
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "d = settings.DATABASES['postgres']; "
        "print(d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'], d['POOL']['MAX'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**kindler_env, "PG_POOL_MAX": "0", "PG_CONN_MAX_AGE": "45"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # No SELECT 1 before reuse: the failover middleware reruns a request whose
    # kept connection the server dropped.
    assert done.stdout.split() == ["45", "False", "0"]
