"""A save the new server lost is found although another writer moved the version past or to it.

Each instance keeps the versions it acknowledged (kindler.db.sync.acknowledged).
(a) Two saves lost, the other writer's one save on the version before them:
this file's copy is the newer by number. (b) One save lost, the other writer's
two saves: PostgreSQL's is. Both are one update/update conflict, both sides
kept, after a restore and after a failover. A row whose older PostgreSQL
version is one this instance acknowledged is written back, and a newer one
that carries the save acknowledged here is copied: no conflict.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from django.db import connections

from kindler.db.models import AcknowledgedVersion
from kindler.db.sync import acknowledged
from kindler.db.sync.tables import table_for
from tests.conftest import BOTH
from tests.db.failover.conftest import DATABASE, LiveKindler, Pair, start_kindler
from tests.db.failover.test_hosts import names_on
from tests.db.sync.test_diverged_writeback import (
    NAME,
    conflicts,
    in_sqlite,
    known_row,
    on_postgres,
    server,
    set_error,
    sync,
)
from tests.db.sync.test_failover_writeback import async_pair, wal_senders
from tests.factories import make_cluster
from tests.faults import execute
from tests.pgserver import PostgresServer

__all__ = ["async_pair", "server", "start_kindler"]


def kept() -> list[tuple[int, str, str]]:
    rows = AcknowledgedVersion.objects.using("sqlite").order_by("id")
    return [(v.version, v.digest, v.changed) for v in rows]


def postgres_digest(name: str) -> str:
    table = table_for("clusters.cluster")
    with connections["postgres"].cursor() as cursor:
        cursor.execute(f"SELECT {table.quoted()} FROM {table.name} WHERE name = %s", [name])
        return acknowledged.digest(table, table.from_db(cursor.fetchone()))


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_full_save_keeps_its_version_as_postgresql_holds_it() -> None:
    cluster = make_cluster(using="postgres", name="dev")
    inserted = postgres_digest("dev")
    cluster.reconcile_error = "boom"
    cluster.http_port = 18095
    cluster.save()
    assert kept() == [
        (1, inserted, ""),
        (2, postgres_digest("dev"), "http_port,reconcile_error"),
    ]


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_partial_save_keeps_its_version_and_columns_without_a_digest() -> None:
    cluster = make_cluster(using="postgres", name="dev")
    cluster.desired_state = "absent"
    cluster.save(update_fields=["desired_state"])
    assert kept()[1:] == [(2, "", "desired_state")]


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_row_keeps_its_newest_versions_and_none_older_than_the_tombstones() -> None:
    cluster = make_cluster(using="postgres", name="dev")
    for n in range(acknowledged.ACKNOWLEDGED_PER_ROW * 2 - 1):
        cluster.reconcile_error = f"try {n}"
        cluster.save()
    versions = [version for version, _, _ in kept()]
    AcknowledgedVersion.objects.using("sqlite").filter(version__lte=35).update(
        acknowledged_at="2000-01-01T00:00:00.000000Z"
    )
    assert (versions, acknowledged.prune(), [v for v, _, _ in kept()]) == (
        list(range(21, 41)),
        15,
        list(range(36, 41)),
    )


def change(server: PostgresServer, column: str, value: str) -> None:
    """Another writer (psql) changes the row: the version trigger makes it one higher."""
    execute(
        server,
        f"UPDATE clusters_cluster SET {column} = '{value}' WHERE name = '{NAME}'",
        dbname=DATABASE,
    )


def their_saves(server: PostgresServer, *values: str) -> None:
    for value in values:
        change(server, "reconcile_error", value)


def lose_on_failover(pair: Pair, kindler: LiveKindler, *saves: str) -> None:
    """Acknowledge saves the standby never gets (WAL senders paused), then promote it."""
    deadline = time.monotonic() + 30
    while NAME not in names_on(pair.standby) and time.monotonic() < deadline:
        time.sleep(0.1)
    senders = wal_senders(pair.primary)
    for pid in senders:
        os.kill(pid, signal.SIGSTOP)
    for text in saves:
        set_error(kindler, text)
    assert (senders != [], sync(kindler)[0]) == (True, 0)
    pair.primary.kill()
    pair.standby.promote()


@pytest.mark.slow
def test_two_lost_saves_and_another_writers_one_save_are_one_conflict(
    server: PostgresServer, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(server.host, str(server.port))
    known_row(kindler)
    backup = server.base_backup()
    set_error(kindler, "ours 1")
    set_error(kindler, "ours 2")
    assert sync(kindler)[0] == 0
    server.restore(backup)
    their_saves(server, "theirs")
    code, out = sync(kindler)
    assert conflicts(server) == [("update/update", "ours 2", "theirs")]
    assert (on_postgres(server), in_sqlite(kindler)) == (("theirs", 2), ("theirs", 2))
    assert (code, "Open conflicts: 1." in out) == (2, True), out


@pytest.mark.slow
def test_one_lost_save_and_another_writers_two_saves_are_one_conflict(
    server: PostgresServer, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(server.host, str(server.port))
    known_row(kindler)
    backup = server.base_backup()
    set_error(kindler, "ours")
    assert sync(kindler)[0] == 0
    server.restore(backup)
    their_saves(server, "theirs 1", "theirs 2")
    code, out = sync(kindler)
    assert conflicts(server) == [("update/update", "ours", "theirs 2")]
    assert (on_postgres(server), in_sqlite(kindler)) == (("theirs 2", 3), ("theirs 2", 3))
    assert (code, "Open conflicts: 1." in out) == (2, True), out


@pytest.mark.slow
def test_a_server_holding_a_save_acknowledged_here_gets_the_later_ones_back(
    server: PostgresServer, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(server.host, str(server.port))
    known_row(kindler)
    set_error(kindler, "ours 1")
    assert sync(kindler)[0] == 0
    backup = server.base_backup()
    set_error(kindler, "ours 2")
    set_error(kindler, "ours 3")
    assert sync(kindler)[0] == 0
    server.restore(backup)
    code, out = sync(kindler)
    assert (conflicts(server), on_postgres(server), in_sqlite(kindler)) == (
        [],
        ("ours 3", 4),
        ("ours 3", 4),
    )
    written = "Rows written back into PostgreSQL (1):" in out
    assert (code, "Open conflicts: 0." in out, written) == (0, True, True), out


@pytest.mark.slow
def test_a_newer_version_that_carries_the_save_acknowledged_here_is_copied(
    server: PostgresServer, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(server.host, str(server.port))
    known_row(kindler)
    set_error(kindler, "ours")
    assert sync(kindler)[0] == 0
    change(server, "actual_state", "failed")
    change(server, "actual_state", "running")
    server.stop()
    server.start()
    code, out = sync(kindler)
    assert (conflicts(server), on_postgres(server), in_sqlite(kindler)) == (
        [],
        ("ours", 4),
        ("ours", 4),
    )
    assert (code, "Open conflicts: 0." in out) == (0, True), out


@pytest.mark.slow
def test_a_failover_that_lost_two_saves_and_one_save_on_the_promoted_standby_is_one_conflict(
    async_pair: Pair, start_kindler: Callable[..., LiveKindler]
) -> None:
    pair = async_pair
    kindler = start_kindler(pair.hosts, pair.ports)
    known_row(kindler)
    lose_on_failover(pair, kindler, "ours 1", "ours 2")
    lost = on_postgres(pair.standby)
    their_saves(pair.standby, "theirs")
    code, out = sync(kindler)
    assert (lost, on_postgres(pair.standby), in_sqlite(kindler)) == (
        ("", 1),
        ("theirs", 2),
        ("theirs", 2),
    )
    assert conflicts(pair.standby) == [("update/update", "ours 2", "theirs")]
    assert (code, "Open conflicts: 1." in out) == (2, True), out


@pytest.mark.slow
def test_a_failover_that_lost_one_save_and_two_saves_on_the_promoted_standby_is_one_conflict(
    async_pair: Pair, start_kindler: Callable[..., LiveKindler]
) -> None:
    pair = async_pair
    kindler = start_kindler(pair.hosts, pair.ports)
    known_row(kindler)
    lose_on_failover(pair, kindler, "ours")
    lost = on_postgres(pair.standby)
    their_saves(pair.standby, "theirs 1", "theirs 2")
    code, out = sync(kindler)
    assert (lost, on_postgres(pair.standby), in_sqlite(kindler)) == (
        ("", 1),
        ("theirs 2", 3),
        ("theirs 2", 3),
    )
    assert conflicts(pair.standby) == [("update/update", "ours", "theirs 2")]
    assert (code, "Open conflicts: 1." in out) == (2, True), out
