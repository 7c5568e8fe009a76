"""SQLite writers of one instance take turns instead of polling for the write lock."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connections

from kindler.db.failover import writelock
from kindler.db.failover.writelock import queue_path, write_transaction, writer_turn

pytestmark = pytest.mark.django_db(databases=["sqlite"])


def busy_timeout_ms() -> int:
    with connections["sqlite"].cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        return int(cursor.fetchone()[0])


@pytest.fixture
def other_process_turn() -> Iterator[int]:
    """Hold the queue as another worker would (its own open file, its own flock)."""
    fd = os.open(queue_path(), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield fd
    os.close(fd)


def test_a_turn_that_waited_leaves_sqlite_only_the_rest_of_the_budget(
    other_process_turn: int,
) -> None:
    configured = busy_timeout_ms()
    started = time.monotonic()
    with writer_turn(connections["sqlite"], 0.2):
        inside, waited = busy_timeout_ms(), time.monotonic() - started
    assert (inside, busy_timeout_ms(), waited >= 0.19) == (0, configured, True)


def test_a_turn_without_waiting_leaves_the_busy_timeout_alone() -> None:
    configured = busy_timeout_ms()
    with writer_turn(connections["sqlite"], 0.2):
        inside = busy_timeout_ms()
    assert (inside, busy_timeout_ms()) == (configured, configured)


class SlowClock:
    """time as a busy machine shows it to writelock: 10 ms pass between any two readings."""

    sleep = staticmethod(time.sleep)

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        self.now += 0.01
        return self.now


def test_a_turn_nobody_held_leaves_the_busy_timeout_alone_on_a_busy_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writelock, "time", SlowClock())
    configured = busy_timeout_ms()
    with writer_turn(connections["sqlite"], 0.2):
        inside = busy_timeout_ms()
    assert (inside, busy_timeout_ms()) == (configured, configured)


def test_the_next_thread_gets_its_turn_as_soon_as_the_holder_leaves() -> None:
    released: list[float] = []
    started: list[float] = []
    holding = threading.Event()

    def holder() -> None:
        with writer_turn(connections["sqlite"], 2.0):
            holding.set()
            time.sleep(0.3)
            released.append(time.monotonic())
        connections["sqlite"].close()

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    with writer_turn(connections["sqlite"], 2.0):
        started.append(time.monotonic())
    thread.join()
    # SQLite's own wait sleeps up to 100 ms between looks at the lock.
    assert 0 <= started[0] - released[0] < 0.05


@pytest.fixture
def scratch() -> Iterator[str]:
    """A table of the test SQLite file, and that file's path."""
    path = str(connections["sqlite"].settings_dict["NAME"])
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS scratch (n integer)")
        conn.execute("DELETE FROM scratch")
    yield path
    connections["sqlite"].close()


def another_writer_gets_the_lock(path: str) -> bool:
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def scratch_rows(path: str) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [n for (n,) in conn.execute("SELECT n FROM scratch")]


@pytest.mark.django_db(databases=["sqlite"], transaction=True)
def test_the_write_lock_is_taken_at_the_first_write_not_before(scratch: str) -> None:
    begun: list[bool] = []
    connection = connections["sqlite"]
    with write_transaction(connection, on_begin=lambda: begun.append(True)):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM scratch")
        before = (another_writer_gets_the_lock(scratch), list(begun))
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO scratch VALUES (1)")
        after = (another_writer_gets_the_lock(scratch), list(begun))
    assert (before, after, scratch_rows(scratch)) == ((True, []), (False, [True]), [1])


@pytest.mark.django_db(databases=["sqlite"], transaction=True)
def test_a_block_that_only_reads_begins_nothing(scratch: str) -> None:
    begun: list[bool] = []
    connection = connections["sqlite"]
    with (
        write_transaction(connection, on_begin=lambda: begun.append(True)),
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT count(*) FROM scratch")
    assert (begun, connection.in_atomic_block, another_writer_gets_the_lock(scratch)) == (
        [],
        False,
        True,
    )


@pytest.mark.django_db(databases=["sqlite"], transaction=True)
def test_a_failed_block_keeps_none_of_its_writes(scratch: str) -> None:
    connection = connections["sqlite"]

    def failing_view() -> None:
        with write_transaction(connection, on_begin=lambda: None):
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO scratch VALUES (1)")
                cursor.execute("SAVEPOINT inner_one")
                cursor.execute("INSERT INTO scratch VALUES (2)")
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        failing_view()
    assert (scratch_rows(scratch), another_writer_gets_the_lock(scratch)) == ([], True)
