"""Kindler behind a real PgBouncer in transaction mode: the API, outages, replays, claims."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from bench.services import Kindler
from bench.workload import request
from tests.db.failover.conftest import ROOT, kindler_env
from tests.fakes import FakeTools
from tests.faults import admin_connection
from tests.pgbouncer import INSTALL_HINT, PgBouncer, find_pgbouncer
from tests.pgserver import PostgresServer, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_pgbouncer() is None, reason=INSTALL_HINT),
]

DATABASE = "kindler"


class Instance:
    """One Kindler instance (kindler.webserver, its own SQLite file) talking to PgBouncer."""

    def __init__(self, folder: Path, bouncer: PgBouncer, number: int, **extra: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.env = kindler_env(
            folder,
            bouncer.host,
            str(bouncer.port),
            KINDLER_BIND=f"127.0.0.1:{self.port}",
            **extra,
        )
        self.token = self.env["KINDLER_API_TOKEN"]
        self.server = Kindler(self.env, self.port, folder / "kindler.log")
        # Host ports of its own: instances that gave two clusters the same
        # ports would make the replay record conflicts, as it should.
        self.ports = iter(range(21000 + number * 1000, 21000 + (number + 1) * 1000, 3))

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def call(self, method: str, path: str, body: Any = None) -> tuple[str, Any]:
        return request(self.port, method, path, self.token, body)

    def create(self, name: str) -> str:
        port = next(self.ports)
        body = {"name": name, "http_port": port, "https_port": port + 1, "pf_port": port + 2}
        return self.call("POST", "/api/clusters", body)[0]

    def state(self) -> str | None:
        status, body = self.call("GET", "/api/health")
        return str(body["database"]["state"]) if status in ("200", "503") else None

    def wait_for(self, state: str, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.state() == state:
                return
            time.sleep(0.2)
        raise AssertionError(f"the instance did not reach {state} within {seconds} s")


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    # Durable: an immediate stop must not lose what PostgreSQL acknowledged.
    pg = PostgresServer(durable=True)
    pg.init()
    pg.start()
    pg.create_database(DATABASE)
    yield pg
    pg.destroy()


@pytest.fixture
def bouncer(server: PostgresServer) -> Iterator[PgBouncer]:
    found = PgBouncer(server, mode="transaction", pool_size=4)
    found.start()
    yield found
    found.destroy()


@pytest.fixture
def instances(tmp_path: Path, bouncer: PgBouncer) -> Iterator[list[Instance]]:
    """Make instances on demand; the first one migrates PostgreSQL through PgBouncer."""
    made: list[Instance] = []

    def make(**extra: str) -> Instance:
        number = len(made)
        instance = Instance(tmp_path / f"instance-{number}", bouncer, number, **extra)
        migrated = instance.manage("migrate", "--no-input", "-v", "0")
        assert migrated.returncode == 0, migrated.stderr
        instance.server.start()
        instance.wait_for("primary")
        made.append(instance)
        return instance

    made_list: list[Any] = [make]
    yield made_list  # type: ignore[misc]
    for instance in made:
        instance.server.stop()


def rows(pg: PostgresServer, sql: str) -> list[tuple[Any, ...]]:
    conn = admin_connection(pg, DATABASE)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        conn.close()


def cluster_names(pg: PostgresServer) -> list[str]:
    return [name for (name,) in rows(pg, "SELECT name FROM clusters_cluster ORDER BY name")]


def advisory_locks(pg: PostgresServer) -> int:
    return int(rows(pg, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0])


def test_the_api_answers_through_pgbouncer(
    instances: list[Any], server: PostgresServer, bouncer: PgBouncer
) -> None:
    kindler = instances[0]()
    assert [kindler.create(f"bounced-{i}") for i in range(5)] == ["202"] * 5
    status, body = kindler.call("GET", "/api/clusters")
    assert (status, sorted(c["name"] for c in body)) == (
        "200",
        [f"bounced-{i}" for i in range(5)],
    )
    assert cluster_names(server) == [f"bounced-{i}" for i in range(5)]
    # PgBouncer never opened more server connections than its pool allows.
    assert bouncer.server_connections(DATABASE) <= 4
    assert advisory_locks(server) == 0


def test_an_outage_and_its_replay_through_pgbouncer_lose_nothing(
    instances: list[Any], server: PostgresServer
) -> None:
    kindler = instances[0]()
    assert [kindler.create(f"before-{i}") for i in range(3)] == ["202"] * 3
    server.stop("immediate")
    kindler.wait_for("fallback", 30)
    assert [kindler.create(f"during-{i}") for i in range(3)] == ["202"] * 3
    server.start()
    kindler.wait_for("primary")
    assert cluster_names(server) == [
        *(f"before-{i}" for i in range(3)),
        *(f"during-{i}" for i in range(3)),
    ]
    assert rows(server, "SELECT count(*) FROM kindler_db_appliedentry")[0][0] > 0
    assert advisory_locks(server) == 0


def test_two_instances_replaying_at_once_through_pgbouncer_lose_nothing(
    instances: list[Any], server: PostgresServer
) -> None:
    first, second = instances[0](), instances[0]()
    server.stop("immediate")
    first.wait_for("fallback", 30)
    second.wait_for("fallback", 30)
    assert [first.create(f"first-{i}") for i in range(20)] == ["202"] * 20
    assert [second.create(f"second-{i}") for i in range(20)] == ["202"] * 20
    server.start()
    first.wait_for("primary")
    second.wait_for("primary")
    names = cluster_names(server)
    assert names == sorted(
        [*(f"first-{i}" for i in range(20)), *(f"second-{i}" for i in range(20))]
    )
    assert rows(server, "SELECT count(*) FROM kindler_db_conflict")[0][0] == 0
    assert advisory_locks(server) == 0


def test_two_reconcilers_claim_each_cluster_once_through_pgbouncer(
    instances: list[Any], server: PostgresServer, fakes: FakeTools
) -> None:
    kindler = instances[0](KINDLER_FAKE_STATE=str(fakes.state), KINDLER_CHILD_ENV="KINDLER_FAKE_*")
    names = [f"claimed-{i}" for i in range(6)]
    assert [kindler.create(name) for name in names] == ["202"] * 6
    passes = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "reconcile", "--once"],
            env=kindler.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for each in passes:
        _, err = each.communicate(timeout=120)
        assert each.returncode == 0, err
    created = sorted(
        argv[3] for argv in fakes.actions() if argv[:3] == ["k3d", "cluster", "create"]
    )
    assert created == names
    states = rows(server, "SELECT DISTINCT actual_state FROM clusters_cluster")
    assert states == [("running",)]
    assert advisory_locks(server) == 0


COMPOSE = ROOT / "compose"


@pytest.mark.parametrize("name", ["web", "reconciler"])
def test_the_compose_variant_puts_pgbouncer_between_kindler_and_haproxy(name: str) -> None:
    services = yaml.safe_load((COMPOSE / "docker-compose.pgbouncer.yml").read_text())["services"]
    environment = services[name]["environment"]
    assert (environment["PG_HOST"], environment["PG_PORT"]) == ("pgbouncer", "6432")
    assert services["pgbouncer"]["depends_on"] == {"haproxy": {"condition": "service_started"}}
    ini = (COMPOSE / "pgbouncer.ini").read_text()
    assert "* = host=haproxy port=5432 " in ini
    assert "\npool_mode = transaction\n" in ini


def test_the_compose_pgbouncer_ini_pools_transactions_with_kindlers_timeouts(
    server: PostgresServer,
) -> None:
    bouncer = PgBouncer(server, template=(COMPOSE / "pgbouncer.ini").read_text())
    bouncer.start()
    try:
        conn = psycopg2.connect(
            host=bouncer.host,
            port=bouncer.port,
            dbname=DATABASE,
            user=server.user,
            password=server.password,
            # Ignored by PgBouncer (ignore_startup_parameters), as Kindler's are.
            options="-c statement_timeout=1",
        )
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
            )
            timeouts = cursor.fetchone()
        conn.close()
        config = {row[0]: row[1] for row in bouncer.admin("SHOW CONFIG")}
    finally:
        bouncer.destroy()
    assert timeouts == ("5s", "2s")
    assert (config["pool_mode"], config["default_pool_size"]) == ("transaction", "20")


def test_each_web_server_worker_reports_its_own_connections(
    instances: list[Any], server: PostgresServer
) -> None:
    kindler = instances[0](KINDLER_WORKERS="2")
    rows_seen: dict[int, dict[str, Any]] = {}
    for _ in range(40):
        for row in kindler.call("GET", "/api/health")[1]["database"]["connections"]:
            rows_seen[row["pid"]] = row
    main = kindler.server.process
    assert main is not None
    children = {
        int(pid)
        for pid in subprocess.run(
            ["pgrep", "-P", str(main.pid)], capture_output=True, text=True
        ).stdout.split()
    }
    assert set(rows_seen) <= children
    assert len(rows_seen) >= 1
    assert {row["maximum"] for row in rows_seen.values()} == {10}
    # One process leads the instance and keeps the one probe connection.
    assert sum(row["probes_open"] for row in rows_seen.values()) == 1
    out = kindler.manage("dbstatus", "--json")
    listed = {row["pid"] for row in json.loads(out.stdout)["pool"]["processes"]}
    assert set(rows_seen) <= listed
