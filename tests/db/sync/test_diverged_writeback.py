"""An acknowledged update the new server lost, and another writer's change there: a conflict.

Both end at the same version, so versions cannot tell them apart; the merge
after a restore, failover or restart compares the rows' contents. A restart
that lost nothing, or a change made on PostgreSQL alone, is no conflict.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.db.failover.conftest import DATABASE, LiveKindler, Pair, start_kindler
from tests.db.failover.test_hosts import names_on
from tests.db.sync.test_failover_writeback import async_pair, wal_senders
from tests.faults import execute
from tests.pgserver import PostgresServer

__all__ = ["async_pair", "start_kindler"]

NAME = "shared"


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    server = PostgresServer(durable=True)
    server.init()
    server.start()
    server.create_database(DATABASE)
    yield server
    server.destroy()


def shell(kindler: LiveKindler, code: str) -> str:
    done = kindler.manage("shell", "-c", code)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sync(kindler: LiveKindler) -> tuple[int, str]:
    done = kindler.manage("sync_db")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


def set_error(kindler: LiveKindler, text: str) -> None:
    """Update the row through Kindler on PostgreSQL: acknowledged, and copied into its SQLite file.

    Pinned: a process whose first probe times out on a loaded machine would
    save on SQLite instead, and a save replayed later is no acknowledged version.
    """
    shell(
        kindler,
        "from clusters.models import Cluster\n"
        "from kindler.db.failover.pinning import pinned_alias\n"
        "with pinned_alias('postgres'):\n"
        f"    c = Cluster.objects.get(name={NAME!r}); c.reconcile_error = {text!r}; c.save()\n",
    )


def known_row(kindler: LiveKindler) -> Any:
    """Start from one row PostgreSQL and SQLite both hold, and a mirror that remembers it."""
    kindler.server.stop()
    shell(kindler, f"from clusters.models import Cluster; Cluster.objects.create(name={NAME!r})")
    assert sync(kindler)[0] == 0


def on_postgres(server: PostgresServer) -> tuple[str, int]:
    conn = psycopg2.connect(**server.connect_kwargs(DATABASE), connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT reconcile_error, version FROM clusters_cluster WHERE name = %s", [NAME]
            )
            error, version = cursor.fetchone()
            return str(error), int(version)
    finally:
        conn.close()


def conflicts(server: PostgresServer) -> list[tuple[str, str, str]]:
    conn = psycopg2.connect(**server.connect_kwargs(DATABASE), connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT kind, local->>'reconcile_error', remote->>'reconcile_error' "
                "FROM kindler_db_conflict WHERE model = 'clusters.cluster'"
            )
            return [(str(a), str(b), str(c)) for a, b, c in cursor.fetchall()]
    finally:
        conn.close()


def in_sqlite(kindler: LiveKindler) -> tuple[str, int]:
    conn = sqlite3.connect(Path(kindler.env["SQLITE_PATH"]))
    try:
        row = conn.execute(
            "SELECT reconcile_error, version FROM clusters_cluster WHERE name = ?", [NAME]
        ).fetchone()
        return str(row[0]), int(row[1])
    finally:
        conn.close()


def their_change(server: PostgresServer) -> None:
    """Another writer (psql) changes the row: the version trigger makes it one higher."""
    execute(
        server,
        f"UPDATE clusters_cluster SET reconcile_error = 'theirs' WHERE name = '{NAME}'",
        dbname=DATABASE,
    )


@pytest.mark.slow
def test_a_lost_acknowledged_update_and_another_writers_change_are_one_conflict(
    server: PostgresServer, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(server.host, str(server.port))
    known_row(kindler)
    backup = server.base_backup()
    set_error(kindler, "ours")
    assert sync(kindler)[0] == 0
    server.restore(backup)
    lost = on_postgres(server)
    their_change(server)
    code, out = sync(kindler)
    assert (lost, on_postgres(server), in_sqlite(kindler)) == (
        ("", 1),
        ("theirs", 2),
        ("theirs", 2),
    )
    assert conflicts(server) == [("update/update", "ours", "theirs")]
    assert (code, "(full)" in out, "Open conflicts: 1." in out) == (2, True, True), out


@pytest.mark.slow
def test_a_restart_that_lost_nothing_is_no_conflict(
    server: PostgresServer, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(server.host, str(server.port))
    known_row(kindler)
    set_error(kindler, "ours")
    assert sync(kindler)[0] == 0
    server.stop()
    server.start()
    code, out = sync(kindler)
    assert (code, "(full)" in out, "Open conflicts: 0." in out) == (0, True, True), out
    assert (conflicts(server), on_postgres(server), in_sqlite(kindler)) == (
        [],
        ("ours", 2),
        ("ours", 2),
    )


@pytest.mark.slow
def test_a_change_on_postgresql_alone_is_pulled_at_a_merge(
    server: PostgresServer, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(server.host, str(server.port))
    known_row(kindler)
    their_change(server)
    server.stop()
    server.start()
    code, out = sync(kindler)
    assert (code, "(full)" in out, "Pulled 1," in out) == (0, True, True), out
    assert (conflicts(server), on_postgres(server), in_sqlite(kindler)) == (
        [],
        ("theirs", 2),
        ("theirs", 2),
    )


@pytest.mark.slow
def test_an_update_a_failover_lost_and_a_change_on_the_promoted_standby_are_one_conflict(
    async_pair: Pair, start_kindler: Callable[..., LiveKindler]
) -> None:
    pair = async_pair
    kindler = start_kindler(pair.hosts, pair.ports)
    known_row(kindler)
    deadline = time.monotonic() + 30
    while NAME not in names_on(pair.standby) and time.monotonic() < deadline:
        time.sleep(0.1)
    senders = wal_senders(pair.primary)
    for pid in senders:
        os.kill(pid, signal.SIGSTOP)
    set_error(kindler, "ours")
    assert sync(kindler)[0] == 0
    pair.primary.kill()
    pair.standby.promote()
    lost = on_postgres(pair.standby)
    their_change(pair.standby)
    code, out = sync(kindler)
    assert (senders != [], lost, on_postgres(pair.standby), in_sqlite(kindler)) == (
        True,
        ("", 1),
        ("theirs", 2),
        ("theirs", 2),
    )
    assert conflicts(pair.standby) == [("update/update", "ours", "theirs")]
    assert (code, "Open conflicts: 1." in out) == (2, True), out
