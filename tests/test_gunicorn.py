"""gunicorn serves Kindler too (gunicorn.conf.py): its workers share one database state."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.conftest import wait_for
from tests.db.failover.conftest import DATABASE, kindler_env
from tests.pgserver import PostgresServer, free_port

ROOT = Path(__file__).resolve().parent.parent
# Each access log line names the worker that answered and the probe it answered.
PROBE_FORMAT = "%(p)s %({x-probe}i)s"
PROBE_LINE = re.compile(r"<(\d+)> (\d+)")
PRIMARY = ("postgres", "primary")
FALLBACK = ("sqlite", "fallback")


class Gunicorn:
    """`gunicorn kindler.wsgi` started in the project folder, as docs/deployment.md says."""

    def __init__(self, env: dict[str, str], access_log: Path) -> None:
        self.port = free_port()
        self.token = env["KINDLER_API_TOKEN"]
        self.access_log = access_log
        self.probes = count()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--access-logformat", PROBE_FORMAT, "kindler.wsgi"],
            env={
                **env,
                "KINDLER_BIND": f"127.0.0.1:{self.port}",
                "KINDLER_ACCESS_LOG": str(access_log),
            },
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def call(
        self, method: str, path: str, body: Any = None, probe: int | None = None
    ) -> tuple[int, Any]:
        """Return the status and the decoded JSON answer of one request on a new connection."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        if probe is not None:
            headers["X-Probe"] = str(probe)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body)
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def answers(self) -> bool:
        with contextlib.suppress(OSError):
            return self.call("GET", "/api/health")[0] == 200
        return False

    def workers(self) -> set[int]:
        """Return the process ids of gunicorn's workers (its children)."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return {int(pid) for pid in found.stdout.split()}

    def states(self, requests: int = 40) -> dict[int, set[tuple[str, str]]]:
        """Ask /api/health from 4 clients at once; return what each worker answered."""
        probes = [next(self.probes) for _ in range(requests)]
        with ThreadPoolExecutor(4) as pool:
            answers = dict(zip(probes, pool.map(self.health, probes), strict=True))
        # The line is written once the answer is sent, so it may come a little later.
        lines = wait_for(lambda: self.answered_by(set(probes)))
        states: dict[int, set[tuple[str, str]]] = {}
        for probe, pid in lines.items():
            states.setdefault(pid, set()).add(answers[probe])
        return states

    def health(self, probe: int) -> tuple[str, str]:
        status, body = self.call("GET", "/api/health", probe=probe)
        assert status == 200, body
        return body["database"]["active"], body["database"]["state"]

    def answered_by(self, probes: set[int]) -> dict[int, int] | None:
        """Return the worker that answered each probe, or None while a line is missing."""
        found = {}
        for line in self.access_log.read_text().splitlines():
            match = PROBE_LINE.fullmatch(line)
            if match and int(match.group(2)) in probes:
                found[int(match.group(2))] = int(match.group(1))
        return found if len(found) == len(probes) else None

    def every_worker_says(self, state: tuple[str, str]) -> bool:
        """Return True once both workers answered, and answered nothing but state."""
        states = self.states()
        return set(states) == self.workers() and all(seen == {state} for seen in states.values())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, so the test can stop it."""
    server = PostgresServer()
    server.init()
    server.start()
    server.create_database(DATABASE)
    yield server
    server.destroy()


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[Gunicorn]]:
    """Whatever a test started, stopped at its end."""
    started: list[Gunicorn] = []
    yield started
    for server in started:
        server.stop()


def names_on(server: PostgresServer) -> set[str]:
    conn = psycopg2.connect(**server.connect_kwargs(DATABASE), connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT name FROM clusters_cluster")
            return {row[0] for row in cursor.fetchall()}
    finally:
        conn.close()


def create(server: Gunicorn, name: str, port: int) -> int:
    fields = {"name": name, "http_port": port, "https_port": port + 1, "pf_port": port + 2}
    return server.call("POST", "/api/clusters", fields)[0]


@pytest.mark.slow
@pytest.mark.postgres
def test_both_gunicorn_workers_follow_an_outage_and_the_return(
    postgres: PostgresServer, serve: list[Gunicorn], tmp_path: Path
) -> None:
    env = kindler_env(tmp_path, postgres.host, str(postgres.port), KINDLER_THREADS="2")
    migrate(env)
    server = Gunicorn(env, tmp_path / "access.log")
    serve.append(server)
    wait_for(server.answers, 60)
    wait_for(lambda: server.every_worker_says(PRIMARY), 30, every=0.2)
    before = create(server, "before", 20000)
    postgres.stop()
    wait_for(lambda: server.every_worker_says(FALLBACK), 30, every=0.2)
    during = create(server, "during", 20010)
    postgres.start()
    wait_for(lambda: server.every_worker_says(PRIMARY), 60, every=0.2)
    assert (before, during, len(server.workers()), names_on(postgres)) == (
        202,
        202,
        2,
        {"before", "during"},
    )


@pytest.mark.slow
def test_gunicorn_serves_sqlite_alone(serve: list[Gunicorn], tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in kindler_env(tmp_path, "unused", "0").items()
        if not key.startswith("PG_")
    }
    migrate(env)
    server = Gunicorn(env, tmp_path / "access.log")
    serve.append(server)
    wait_for(server.answers, 60)
    states = wait_for(lambda: (found := server.states()) and len(found) == 2 and found, 30)
    status = create(server, "alone", 20000)
    listed = server.call("GET", "/api/clusters")[1]
    assert (
        sorted(states.values(), key=str),
        status,
        [cluster["name"] for cluster in listed],
        server.access_log.stat().st_mode & 0o777,
    ) == ([{("sqlite", "primary")}, {("sqlite", "primary")}], 202, ["alone"], 0o600)
