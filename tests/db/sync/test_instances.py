"""Two Kindler instances, each with its own SQLite file, sharing one PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusters.models import Cluster
from kindler.db.models import AppliedEntry
from tests.conftest import BOTH
from tests.db.sync.syncing import conflicts, kindler, on_postgres, settings_base_dir
from tests.factories import make_cluster
from tests.pgserver import PostgresServer
from tests.tcpproxy import TcpProxy

pytestmark = [pytest.mark.django_db(databases=BOTH, transaction=True), pytest.mark.slow]


@pytest.fixture
def proxy(pg_server: PostgresServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(pg_server.host, pg_server.port)
    yield proxy
    proxy.close()


def instance(kindler_env: dict[str, Any], proxy: TcpProxy, sqlite: Path) -> dict[str, Any]:
    env = {**kindler_env, "PG_PORT": str(proxy.port), "SQLITE_PATH": str(sqlite)}
    kindler(env, "migrate", "--database", "sqlite", "-v", "0")
    kindler(env, "sync_db", "--pull")
    return env


def instance_id(env: dict[str, Any]) -> str:
    code = "from kindler.db.sync.journal import instance_id; print(instance_id())"
    return str(kindler(env, "shell", "-c", code).stdout.strip().splitlines()[-1])


def test_each_instance_replays_its_own_journal_and_postgres_holds_every_write(
    kindler_env: dict[str, Any], proxy: TcpProxy, tmp_path: Path
) -> None:
    shared = make_cluster(using="postgres", name="shared")
    one = instance(kindler_env, proxy, tmp_path / "one.db")
    two = instance(kindler_env, proxy, tmp_path / "two.db")
    proxy.cut()
    kindler(
        one,
        "cluster",
        "create",
        "one-1",
        "--http-port",
        "41080",
        "--https-port",
        "41443",
        "--pf-port",
        "41000",
    )
    kindler(
        two,
        "cluster",
        "create",
        "two-1",
        "--http-port",
        "42080",
        "--https-port",
        "42443",
        "--pf-port",
        "42000",
    )
    kindler(one, "cluster", "stop", "shared")
    kindler(two, "cluster", "delete", "shared")
    kindler(
        one,
        "cluster",
        "create",
        "both",
        "--http-port",
        "43080",
        "--https-port",
        "43443",
        "--pf-port",
        "43000",
    )
    kindler(
        two,
        "cluster",
        "create",
        "both",
        "--http-port",
        "44080",
        "--https-port",
        "44443",
        "--pf-port",
        "44000",
    )
    proxy.restore()
    replays = [
        subprocess.Popen(
            [sys.executable, "manage.py", "sync_db", "--push"],
            cwd=str(settings_base_dir()),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in (one, two)
    ]
    codes = [process.wait(timeout=120) for process in replays]
    # Whichever finishes last sees both conflicts and exits 2.
    assert max(codes) == 2
    names = sorted(Cluster.objects.using("postgres").values_list("name", flat=True))
    assert names == ["both", "one-1", "shared", "two-1"]
    assert sorted(conflicts()) == [("insert/insert", "both"), ("update/update", "shared")]
    assert on_postgres("shared").uid == shared.uid
    instances = AppliedEntry.objects.using("postgres").values_list("instance_id", flat=True)
    assert {str(i) for i in instances} == {instance_id(one), instance_id(two)}
    assert instance_id(one) != instance_id(two)
