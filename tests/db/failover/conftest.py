"""A primary with a streaming standby, and a Kindler under granian that lists them both."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.services import Kindler
from bench.workload import request
from tests.environment import child_environ
from tests.faults import execute
from tests.pgserver import PostgresServer, free_port

ROOT = Path(__file__).resolve().parents[3]
DATABASE = "kindler"


@dataclass
class Pair:
    primary: PostgresServer
    standby: PostgresServer

    @property
    def hosts(self) -> str:
        return f"{self.primary.host},{self.standby.host}"

    @property
    def ports(self) -> str:
        return f"{self.primary.port},{self.standby.port}"


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A durable primary whose commits wait for its standby (synchronous replication)."""
    primary = PostgresServer(durable=True)
    primary.init()
    primary.start()
    primary.create_database(DATABASE)
    standby = primary.standby()
    # Only now: with no standby yet, every commit would wait for one.
    execute(
        primary,
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "SELECT pg_reload_conf()",
    )
    yield Pair(primary, standby)
    standby.destroy()
    primary.destroy()


@dataclass
class LiveKindler:
    """A running Kindler and what a test needs to talk to it."""

    server: Kindler
    port: int
    token: str
    env: dict[str, str]

    def call(self, method: str, path: str, body: Any = None) -> tuple[str, Any]:
        return request(self.port, method, path, self.token, body)

    def health(self) -> tuple[str, Any]:
        # With the token: the public answer leaves out hosts and error texts.
        return request(self.port, "GET", "/api/health", self.token)

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )


def kindler_env(tmp_path: Path, hosts: str, ports: str, **extra: str) -> dict[str, str]:
    """Return the environment of a Kindler process on its own SQLite file."""
    env = child_environ()
    env.update(
        DJANGO_SETTINGS_MODULE="kindler.settings",
        PG_HOST=hosts,
        PG_PORT=ports,
        PG_DATABASE=DATABASE,
        PG_USER=PostgresServer.user,
        PG_PASSWORD=PostgresServer.password,
        PG_CONNECT_TIMEOUT="1",
        PG_STATEMENT_TIMEOUT="2",
        PG_LOCK_TIMEOUT="1",
        SQLITE_PATH=str(tmp_path / "kindler.db"),
        SECRET_KEY=secrets.token_urlsafe(50),
        KINDLER_API_TOKEN=secrets.token_hex(16),
        KINDLER_HEALTH_INTERVAL="0.2",
        KINDLER_MIRROR_INTERVAL="1",
        KINDLER_WORKERS="2",
        KINDLER_ACCESS_LOG="/dev/null",
    )
    env.update(extra)
    return env


@pytest.fixture
def start_kindler(tmp_path: Path) -> Iterator[Callable[..., LiveKindler]]:
    """Migrate, then start kindler.webserver with the given hosts and ports (and extra settings)."""
    started: list[Kindler] = []

    def start(hosts: str, ports: str, **extra: str) -> LiveKindler:
        port = free_port()
        env = kindler_env(tmp_path, hosts, ports, KINDLER_BIND=f"127.0.0.1:{port}", **extra)
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )
        server = Kindler(env, port, tmp_path / "kindler.log")
        server.start()
        started.append(server)
        return LiveKindler(server, port, env["KINDLER_API_TOKEN"], env)

    yield start
    for server in started:
        server.stop()
