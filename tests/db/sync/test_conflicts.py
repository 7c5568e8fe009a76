"""One test per conflict kind, with Kindler cut off from PostgreSQL by a proxy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from clusters.models import Cluster
from kindler.db.failover.monitor import monitor
from kindler.db.failover.pinning import pinned_alias
from kindler.db.models import Conflict
from tests.conftest import BOTH
from tests.db.sync.syncing import conflicts, kindler, on_postgres, on_sqlite, remote_change
from tests.factories import make_cluster
from tests.pgserver import PostgresServer
from tests.tcpproxy import TcpProxy

pytestmark = [pytest.mark.django_db(databases=BOTH, transaction=True), pytest.mark.slow]


@pytest.fixture
def proxy(pg_server: PostgresServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(pg_server.host, pg_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def env(kindler_env: dict[str, Any], proxy: TcpProxy) -> Iterator[dict[str, Any]]:
    """A Kindler process that reaches PostgreSQL through the proxy only.

    It shares this process's SQLite file, so it is the same instance: this
    process stands down, or its monitor (which reaches PostgreSQL directly)
    would replay the other's journal before the test is ready.
    """
    monitor.stand_down()
    yield {**kindler_env, "PG_PORT": str(proxy.port)}
    monitor.reset()


@pytest.fixture
def shared_dev(env: dict[str, Any]) -> Cluster:
    """A cluster `dev` in PostgreSQL, mirrored into Kindler's SQLite file."""
    cluster = make_cluster(using="postgres", name="dev")
    kindler(env, "sync_db", "--pull")
    return cluster


def the_conflict() -> Conflict:
    return Conflict.objects.using("postgres").get()


def local() -> Any:
    """Return the one conflict's local side (None for a local delete)."""
    return the_conflict().local


def remote() -> Any:
    """Return the one conflict's PostgreSQL side (None for a remote delete)."""
    return the_conflict().remote


def test_changed_on_both_sides_is_one_conflict(
    env: dict[str, Any], proxy: TcpProxy, shared_dev: Cluster
) -> None:
    proxy.cut()
    kindler(env, "cluster", "stop", "dev")
    remote_change("dev", desired_state="absent", http_port=28080)
    proxy.restore()
    result = kindler(env, "sync_db", "--push")
    assert result.returncode == 2
    assert conflicts() == [("update/update", "dev")]
    assert (local()["desired_state"], local()["http_port"]) == (
        "stopped",
        shared_dev.http_port,
    )
    assert (remote()["desired_state"], remote()["http_port"]) == ("absent", 28080)
    assert (on_postgres("dev").desired_state, on_postgres("dev").http_port) == ("absent", 28080)


def test_sqlite_shows_postgres_side_after_a_conflict(
    env: dict[str, Any], proxy: TcpProxy, shared_dev: Cluster
) -> None:
    proxy.cut()
    kindler(env, "cluster", "stop", "dev")
    remote_change("dev", desired_state="absent", http_port=28080)
    proxy.restore()
    kindler(env, "sync_db", "--push")
    assert (on_sqlite("dev").desired_state, on_sqlite("dev").http_port) == ("absent", 28080)


def test_created_on_both_sides_with_one_name_is_one_conflict(
    env: dict[str, Any], proxy: TcpProxy
) -> None:
    proxy.cut()
    kindler(env, "cluster", "create", "dev", "--http-port", "28080", "--https-port", "28443")
    # Another instance's create: validated against PostgreSQL, not this instance's state.
    with pinned_alias("postgres"):
        theirs = make_cluster(using="postgres", name="dev", http_port=38080, https_port=38443)
    proxy.restore()
    assert kindler(env, "sync_db", "--push").returncode == 2
    assert conflicts() == [("insert/insert", "dev")]
    assert (local()["http_port"], remote()["http_port"]) == (28080, 38080)
    assert (on_postgres("dev").uid, on_sqlite("dev").uid) == (theirs.uid, theirs.uid)


def test_changed_here_deleted_there_is_one_conflict(
    env: dict[str, Any], proxy: TcpProxy, shared_dev: Cluster
) -> None:
    proxy.cut()
    kindler(env, "cluster", "stop", "dev")
    Cluster.objects.using("postgres").filter(name="dev").delete()
    proxy.restore()
    assert kindler(env, "sync_db", "--push").returncode == 2
    assert conflicts() == [("update/delete", "dev")]
    assert (local()["desired_state"], remote()) == ("stopped", None)
    assert not Cluster.objects.using("postgres").filter(name="dev").exists()


def test_deleted_here_changed_there_is_one_conflict(
    env: dict[str, Any], proxy: TcpProxy, shared_dev: Cluster
) -> None:
    proxy.cut()
    kindler(
        env,
        "shell",
        "-c",
        "from clusters.models import Cluster; Cluster.objects.get(name='dev').delete()",
    )
    remote_change("dev", http_port=28080)
    proxy.restore()
    assert kindler(env, "sync_db", "--push").returncode == 2
    assert conflicts() == [("delete/update", "dev")]
    assert (local(), remote()["http_port"]) == (None, 28080)
    assert on_postgres("dev").http_port == 28080


def test_later_local_changes_join_the_conflict(
    env: dict[str, Any], proxy: TcpProxy, shared_dev: Cluster
) -> None:
    proxy.cut()
    kindler(env, "cluster", "stop", "dev")
    kindler(env, "cluster", "start", "dev")
    remote_change("dev", desired_state="absent", http_port=28080)
    proxy.restore()
    kindler(env, "sync_db", "--push")
    assert conflicts() == [("update/update", "dev")]
    assert local()["desired_state"] == "present"
    assert local()["version"] == 3
