"""A failover that lost the last commits (asynchronous replication): Kindler writes them back."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import psycopg2
import pytest

from tests.db.failover.conftest import DATABASE, LiveKindler, Pair, start_kindler
from tests.db.failover.test_hosts import Writer, names_on, wait_for_health
from tests.pgserver import PostgresServer

__all__ = ["start_kindler"]


@pytest.fixture
def async_pair() -> Iterator[Pair]:
    """A primary and a standby it does not wait for (PostgreSQL's default)."""
    primary = PostgresServer(durable=True)
    primary.init()
    primary.start()
    primary.create_database(DATABASE)
    standby = primary.standby()
    yield Pair(primary, standby)
    standby.destroy()
    primary.destroy()


def wal_senders(server: PostgresServer) -> list[int]:
    conn = psycopg2.connect(**server.connect_kwargs(), connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_replication")
            return [int(pid) for (pid,) in cursor.fetchall()]
    finally:
        conn.close()


def lost_on(standby: PostgresServer, acknowledged: set[str]) -> int:
    return len(acknowledged - names_on(standby))


@pytest.mark.slow
def test_a_failover_that_lost_acknowledged_creates_gets_them_back(
    async_pair: Pair, start_kindler: Callable[..., LiveKindler]
) -> None:
    pair = async_pair
    kindler = start_kindler(pair.hosts, pair.ports)
    writer = Writer(kindler)
    writer.thread.start()
    time.sleep(1.5)
    senders = wal_senders(pair.primary)
    for pid in senders:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(3.0)
    pair.primary.kill()
    before_promote = {name for _, name in writer.acknowledged}
    pair.standby.promote()
    lost = lost_on(pair.standby, before_promote)
    new_primary = f"127.0.0.1:{pair.standby.port}"
    wait_for_health(
        kindler,
        lambda db: (
            db["active"] == "postgres"
            and db["postgres"]["host"] == new_primary
            and db["sync"]["journal"]["pending"] == 0
        ),
    )
    time.sleep(1.5)
    writer.stop.set()
    writer.thread.join(timeout=60)
    acknowledged = {name for _, name in writer.acknowledged}
    missing = acknowledged - names_on(pair.standby)
    _, body = kindler.health()
    errors = [status for status, _ in writer.refused if status == "500"]
    print(
        f"lost by the failover {lost} of {len(before_promote)}, missing after {len(missing)}; "
        f"refused {writer.refused[:3]}"
    )
    assert (senders != [], lost > 0, missing, errors) == (True, True, set(), [])
    assert body["database"]["sync"]["open_conflicts"] == 0
