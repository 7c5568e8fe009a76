"""Processes laid out as the deployment lays them out: the web server apart from Docker.

The web server's PATH has no k3d or kind; each reconciler runs on its own
Docker host (here: its own fake provider state and, for separate machines,
its own SQLite file) and shares PostgreSQL with the others.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connections

from bench.services import Kindler
from bench.workload import request
from clusters import lifecycle
from clusters.models import Cluster
from tests.conftest import BOTH, wait_for
from tests.factories import cluster_fields
from tests.fakes import FOLDER as FAKES_FOLDER
from tests.fakes import FakeTools
from tests.pgserver import PostgresServer, free_port

ROOT = Path(__file__).resolve().parents[2]
MANAGE = [sys.executable, str(ROOT / "manage.py")]
FAST = {
    "KINDLER_HEARTBEAT_INTERVAL": "0.2",
    "KINDLER_OBSERVE_INTERVAL": "0.5",
    "KINDLER_RECONCILE_BACKOFF": "0.2",
}


def without_providers() -> str:
    """Return a PATH with this Python on it and neither k3d nor kind."""
    path = os.pathsep.join(
        folder
        for folder in os.environ["PATH"].split(os.pathsep)
        if folder and Path(folder).resolve() != FAKES_FOLDER
    )
    assert shutil.which("k3d", path=path) is None
    assert shutil.which("kind", path=path) is None
    return path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Reconciler processes a test starts, stopped (SIGTERM, then waited for) at its end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        process.wait(timeout=60)


def start_reconciler(
    env: dict[str, Any], log: Path, started: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*MANAGE, "reconcile", "--interval", "0.2"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    started.append(process)
    return process


def reconciler_env(base: dict[str, Any], host: str, state: Path, **extra: str) -> dict[str, Any]:
    """Return the environment of a reconciler on one Docker host (its fake provider state)."""
    state.mkdir(exist_ok=True)
    return {**base, **FAST, "KINDLER_HOST_NAME": host, "KINDLER_FAKE_STATE": str(state), **extra}


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_web_server_without_k3d_accepts_a_create_that_the_reconciler_runs(
    kindler_env: dict[str, Any],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    fakes = FakeTools(tmp_path / "docker-a")
    start_reconciler(
        reconciler_env(kindler_env, "docker-a", fakes.state), tmp_path / "rec.log", processes
    )
    token, port = secrets.token_hex(16), free_port()
    web_env = {
        **kindler_env,
        **FAST,
        "PATH": without_providers(),
        "KINDLER_HOST_NAME": "web-box",
        "KINDLER_API_TOKEN": token,
        "KINDLER_BIND": f"127.0.0.1:{port}",
        "KINDLER_WORKERS": "1",
        "KINDLER_ACCESS_LOG": "/dev/null",
    }
    web = Kindler(web_env, port, tmp_path / "web.log")
    web.start()
    try:

        def live_reconcilers() -> Any:
            return request(port, "GET", "/api/health", token)[1]["reconcilers"]

        [reconciler] = wait_for(live_reconcilers, seconds=30)
        assert (reconciler["host"], reconciler["providers"]) == (
            "docker-a",
            {"k3d": "v5.7.4", "kind": "v0.24.0"},
        )
        status, body = request(port, "POST", "/api/clusters", token, {"name": "deployed"})
        assert (status, body["message"]) == ("202", "Cluster creation task created for deployed")

        def observed_running() -> Any:
            answer = request(port, "GET", "/api/clusters/deployed/status", token)[1]
            return answer if answer["status"] == "running" else None

        answer = wait_for(observed_running, seconds=60)
        assert (answer["host"], answer["observation_error"]) == ("docker-a", None)
        assert 0 <= answer["age_seconds"] < 10
    finally:
        web.stop()
    assert sorted(fakes.clusters()) == ["deployed"]
    assert Cluster.objects.using("postgres").get(name="deployed").host == "docker-a"


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_health_lists_the_reconciler_on_sqlite_during_an_outage_and_after(
    pg: PostgresServer,
    kindler_env: dict[str, Any],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    state = tmp_path / "docker-a"
    start_reconciler(reconciler_env(kindler_env, "docker-a", state), tmp_path / "r.log", processes)
    token, port = secrets.token_hex(16), free_port()
    web_env = {
        **kindler_env,
        **FAST,
        "PATH": without_providers(),
        "KINDLER_API_TOKEN": token,
        "KINDLER_BIND": f"127.0.0.1:{port}",
        "KINDLER_WORKERS": "1",
        "KINDLER_ACCESS_LOG": "/dev/null",
    }
    web = Kindler(web_env, port, tmp_path / "web.log")
    web.start()

    def reconcilers_on(alias: str) -> Any:
        status, body = request(port, "GET", "/api/health", token)
        if status != "200" or body["database"]["active"] != alias:
            return None
        return [entry["host"] for entry in body["reconcilers"]] or None

    try:
        assert wait_for(lambda: reconcilers_on("postgres"), seconds=30) == ["docker-a"]
        pg.stop("immediate")
        # Registered again on the instance's SQLite file within a heartbeat or two.
        assert wait_for(lambda: reconcilers_on("sqlite"), seconds=60) == ["docker-a"]
        pg.ensure_running()
        assert wait_for(lambda: reconcilers_on("postgres"), seconds=90) == ["docker-a"]
    finally:
        web.stop()


def migrate(env: dict[str, Any]) -> None:
    subprocess.run(
        [*MANAGE, "migrate", "--no-input", "-v", "0"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=180,
    )


def create_with_cli(env: dict[str, Any], name: str, host: str) -> str:
    done = subprocess.run(
        [*MANAGE, "cluster", "create", name, "--host", host, *ports_for(name)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def ports_for(name: str) -> list[str]:
    fields = cluster_fields(name=name)
    return [
        f"--{field.replace('_', '-')}={fields[field]}"
        for field in ("http_port", "https_port", "pf_port")
    ]


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_two_reconcilers_act_only_on_their_own_hosts_clusters_across_an_outage(
    pg: PostgresServer,
    kindler_env: dict[str, Any],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    # Two machines: each its own SQLite file and its own Docker (fake state).
    envs = {}
    for host in ("docker-a", "docker-b"):
        envs[host] = reconciler_env(
            kindler_env,
            host,
            tmp_path / host,
            SQLITE_PATH=str(tmp_path / f"{host}.db"),
            KINDLER_MIRROR_INTERVAL="0.5",
        )
        migrate(envs[host])
    for name, host in (("a1", "docker-a"), ("b1", "docker-b")):
        lifecycle.request_create(**cluster_fields(name=name, host=host))
    for host, env in envs.items():
        start_reconciler(env, tmp_path / f"{host}.log", processes)
    on_a, on_b = FakeTools(tmp_path / "docker-a"), FakeTools(tmp_path / "docker-b")
    wait_for(lambda: "a1" in on_a.clusters() and "b1" in on_b.clusters(), seconds=60)

    pg.stop("immediate")
    # Written on each machine's SQLite; b3 is asked for on docker-a's machine.
    create_with_cli(envs["docker-a"], "a2", "docker-a")
    create_with_cli(envs["docker-a"], "b3", "docker-b")
    create_with_cli(envs["docker-b"], "b2", "docker-b")
    wait_for(lambda: "a2" in on_a.clusters() and "b2" in on_b.clusters(), seconds=60)
    # docker-a's reconciler never takes docker-b's cluster, even from its own file.
    assert "b3" not in on_a.clusters()

    pg.ensure_running()

    def all_running() -> bool:
        try:
            rows = Cluster.objects.using("postgres").filter(actual_state="running")
            names = sorted(rows.values_list("name", flat=True))
        except DatabaseError:
            # This test's own connection died with the server: the next try opens another.
            connections["postgres"].close()
            return False
        return names == ["a1", "a2", "b1", "b2", "b3"]

    wait_for(all_running, seconds=120)
    assert sorted(on_a.clusters()) == ["a1", "a2"]
    assert sorted(on_b.clusters()) == ["b1", "b2", "b3"]
    rows = Cluster.objects.using("postgres").order_by("name").values_list("name", "host")
    assert list(rows) == [
        ("a1", "docker-a"),
        ("a2", "docker-a"),
        ("b1", "docker-b"),
        ("b2", "docker-b"),
        ("b3", "docker-b"),
    ]
