"""PostgreSQL restored from an older physical copy: what Kindler acknowledged since comes back.

The copy is restored in place (same node, timeline and system identifier,
and a change-log position that need not have gone back): only the server's
restart tells. Creates made after the backup are written back, deletes made
after it are made again, and both are listed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest

from tests.db.failover.conftest import DATABASE, LiveKindler, start_kindler
from tests.db.failover.test_hosts import names_on
from tests.pgserver import PostgresServer

__all__ = ["start_kindler"]

GONE = [f"gone-{index}" for index in range(15)]
AFTER = [f"after-{index}" for index in range(5)]


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    server = PostgresServer(durable=True)
    server.init()
    server.start()
    server.create_database(DATABASE)
    yield server
    server.destroy()


def create(kindler: LiveKindler, names: list[str], first_port: int) -> None:
    for offset, name in enumerate(names):
        port = first_port + 3 * offset
        status, answer = kindler.call(
            "POST",
            "/api/clusters",
            {"name": name, "http_port": port, "https_port": port + 1, "pf_port": port + 2},
        )
        assert (name, status) == (name, "202"), answer


def delete_rows(kindler: LiveKindler, names: list[str]) -> None:
    """Delete the rows as the reconciler does once a cluster is gone: an ORM delete."""
    code = (
        "from clusters.models import Cluster; "
        f"print(Cluster.objects.filter(name__in={names!r}).delete()[0])"
    )
    done = kindler.manage("shell", "-c", code)
    assert (done.returncode, done.stdout.split()[-1:]) == (0, [str(len(names))]), done.stderr


def restored_rows(server: PostgresServer) -> list[tuple[str, str]]:
    conn = psycopg2.connect(**server.connect_kwargs(DATABASE), connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT name, why FROM kindler_db_restoredrow "
                "WHERE model = 'clusters.cluster' ORDER BY name"
            )
            return [(str(name), str(why)) for name, why in cursor.fetchall()]
    finally:
        conn.close()


def wait_for(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except psycopg2.Error:
            pass
        time.sleep(0.2)
    raise AssertionError(f"never happened: {what}")


def expected_listing() -> list[tuple[str, str]]:
    return sorted([(name, "restored") for name in AFTER] + [(name, "deleted") for name in GONE])


def lose_after_backup(server: PostgresServer, kindler: LiveKindler) -> Any:
    """Back up, then create AFTER and delete GONE (acknowledged); return the backup."""
    create(kindler, GONE, 21000)
    backup = server.base_backup()
    create(kindler, AFTER, 22000)
    delete_rows(kindler, GONE)
    # Let the mirror record the position after these changes, as a running instance has.
    time.sleep(2.5)
    return backup


@pytest.mark.slow
def test_a_restored_copy_gets_back_the_creates_and_deletes_made_after_the_backup(
    server: PostgresServer, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(server.host, str(server.port))
    backup = lose_after_backup(server, kindler)
    server.restore(backup)
    lost = (set(AFTER) - names_on(server), set(GONE) & names_on(server))
    wait_for(lambda: restored_rows(server) == expected_listing(), "every row listed")
    names = names_on(server)
    _, body = kindler.health()
    print(f"lost by the restore: {len(lost[0])} creates, {len(lost[1])} deletes")
    assert lost == (set(AFTER), set(GONE))
    assert (sorted(set(GONE) & names), sorted(set(AFTER) - names)) == ([], [])
    assert body["database"]["sync"]["open_conflicts"] == 0


@pytest.mark.slow
def test_sync_db_writes_back_and_lists_what_a_restore_lost_while_kindler_was_stopped(
    server: PostgresServer, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(server.host, str(server.port))
    backup = lose_after_backup(server, kindler)
    kindler.server.stop()
    server.restore(backup)
    done = kindler.manage("sync_db")
    # "  <why> <model> <name> <uid>", one line per row written back.
    listed = sorted(
        (line.split()[2], line.split()[0])
        for line in done.stdout.splitlines()
        if line.split()[1:2] == ["clusters.cluster"]
    )
    assert (done.returncode, listed) == (0, expected_listing()), done.stdout + done.stderr
    # 20 clusters and the 5 creates' operation logs.
    assert "Rows written back into PostgreSQL (25):" in done.stdout, done.stdout
    assert (sorted(set(GONE) & names_on(server)), sorted(set(AFTER) - names_on(server))) == ([], [])
