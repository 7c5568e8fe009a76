"""SQLite writers of one instance take turns instead of polling for the write lock."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connections

from kindler.db.failover.writelock import queue_path, writer_turn

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
