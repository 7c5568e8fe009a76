"""PostgreSQL-only mode (KINDLER_FALLBACK=off): 503s instead of SQLite, and SQLite left alone."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from clusters.models import Cluster
from kindler.db.failover.monitor import State
from tests.conftest import BOTH, wait_for_state
from tests.pgserver import PostgresServer, free_port

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)

TOKEN = "postgres-only-token"
DOWN = "PostgreSQL cannot take writes"


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


@pytest.fixture
def postgres_only(pg: PostgresServer, settings: Any) -> PostgresServer:
    """PostgreSQL-only mode, on PostgreSQL; the pg fixture brings it back afterwards."""
    settings.KINDLER_FALLBACK = "off"
    settings.KINDLER_API_TOKEN = TOKEN
    return pg


@pytest.fixture
def outage(postgres_only: PostgresServer) -> PostgresServer:
    postgres_only.stop("immediate")
    wait_for_state(State.UNAVAILABLE)
    return postgres_only


def sqlite_files() -> dict[str, tuple[int, int] | None]:
    """Return (size, modification time) of the SQLite file and its WAL, None when absent."""
    path = Path(django_settings.DATABASES["sqlite"]["TEST"]["NAME"])
    found: dict[str, tuple[int, int] | None] = {}
    for each in (path, Path(f"{path}-wal")):
        found[each.name] = (each.stat().st_size, each.stat().st_mtime_ns) if each.exists() else None
    return found


def create(client: Client, name: str, port: int) -> Any:
    return client.post(
        "/api/clusters",
        {"name": name, "http_port": port, "https_port": port + 1, "pf_port": port + 2},
        content_type="application/json",
    )


def test_an_api_read_answers_503_with_json(client: Client, outage: PostgresServer) -> None:
    response = client.get("/api/clusters")
    assert (response.status_code, response.json()["detail"].startswith(DOWN)) == (503, True)


def test_an_api_write_answers_503_with_json(client: Client, outage: PostgresServer) -> None:
    response = create(client, "refused", 21000)
    assert (response.status_code, response.json()["detail"].startswith(DOWN)) == (503, True)


def test_a_page_answers_the_sites_503_page(outage: PostgresServer) -> None:
    response = Client(raise_request_exception=False).get("/")
    assert (response.status_code, "Database unavailable" in response.content.decode()) == (
        503,
        True,
    )


def test_health_answers_503_unhealthy(
    client: Client, outage: PostgresServer, settings: Any
) -> None:
    settings.KINDLER_API_TOKEN = "health-token-" + "x" * 20
    response = client.get("/api/health", HTTP_AUTHORIZATION=f"Bearer {settings.KINDLER_API_TOKEN}")
    body = response.json()
    assert (
        response.status_code,
        body["status"],
        body["database"]["active"],
        body["database"]["state"],
        body["database"]["fallback"],
        body["database"]["sync"],
    ) == (503, "unhealthy", None, "unavailable", "off", None)


def test_health_answers_200_on_postgres(client: Client, postgres_only: PostgresServer) -> None:
    wait_for_state(State.PRIMARY)
    response = client.get("/api/health")
    assert (response.status_code, response.json()["status"]) == (200, "healthy")


def test_nothing_reaches_sqlite_in_an_outage(client: Client, postgres_only: PostgresServer) -> None:
    before = sqlite_files()
    postgres_only.stop("immediate")
    wait_for_state(State.UNAVAILABLE)
    statuses = [
        client.get("/api/clusters").status_code,
        create(client, "refused", 21000).status_code,
        Client(raise_request_exception=False).get("/").status_code,
    ]
    assert (statuses, sqlite_files()) == ([503, 503, 503], before)


def test_a_write_on_postgres_is_not_copied_into_sqlite(
    client: Client, postgres_only: PostgresServer
) -> None:
    wait_for_state(State.PRIMARY)
    response = create(client, "only-in-postgres", 21000)
    assert (
        response.status_code,
        Cluster.objects.using("postgres").filter(name="only-in-postgres").exists(),
        Cluster.objects.using("sqlite").filter(name="only-in-postgres").exists(),
    ) == (202, True, False)


def test_writes_work_again_once_postgres_returns(client: Client, outage: PostgresServer) -> None:
    outage.start()
    wait_for_state(State.PRIMARY)
    assert create(client, "after", 21000).status_code == 202


def run_cluster_list(tmp_path: Path, pg_server: PostgresServer) -> subprocess.CompletedProcess[str]:
    """Run `manage.py cluster list` in PostgreSQL-only mode against a port nothing listens on."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG_")}
    env.update(
        DJANGO_SETTINGS_MODULE="kindler.settings",
        KINDLER_FALLBACK="off",
        PG_HOST="127.0.0.1",
        PG_PORT=str(free_port()),
        PG_USER=pg_server.user,
        PG_PASSWORD=pg_server.password,
        PG_CONNECT_TIMEOUT="1",
        SQLITE_PATH=str(tmp_path / "kindler.db"),
    )
    return subprocess.run(
        [sys.executable, "manage.py", "cluster", "list"],
        env=env,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_command_exits_1_with_one_line(tmp_path: Path, pg_server: PostgresServer) -> None:
    result = run_cluster_list(tmp_path, pg_server)
    # Above the error: the one line the health monitor logs when it starts.
    *logged, error = result.stderr.splitlines()
    assert (result.returncode, len(logged), error.startswith(f"PostgreSQLUnavailable: {DOWN}")) == (
        1,
        1,
        True,
    )


def test_a_command_leaves_sqlite_empty(tmp_path: Path, pg_server: PostgresServer) -> None:
    run_cluster_list(tmp_path, pg_server)
    # Django's system checks open the file to ask SQLite's version; nothing is created in it.
    conn = sqlite3.connect(tmp_path / "kindler.db")
    try:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    finally:
        conn.close()
