"""Hold SQLite's write lock only while writing, and take turns for it instead of polling.

A request's changes run in one transaction (see the failover middleware),
but on SQLite that transaction now begins (BEGIN IMMEDIATE, which takes
the file's write lock) just before its first write, not when the request
starts: parsing, authentication and validation no longer keep every other
writer of the instance waiting. Reads before the first write see committed
data, as they do on PostgreSQL, where reading takes no lock either.

SQLite's own wait for a busy write lock sleeps in growing steps (up to
100 ms at a time), so under concurrent writes a request can sleep long
after the lock came free: at 8 concurrent writers that made a write's p99
some 300 ms. Here the threads of a process queue on a lock that wakes the
next one at once, and the processes of an instance (the web workers) on
an flock of a file beside the SQLite file, polled every millisecond or
less. SQLite's locking still decides: other programs (the reconciler, a
command, sqlite3 by hand) do not queue here, and whoever gets a turn still
runs BEGIN IMMEDIATE.

The wait for a turn comes out of SQLITE_BUSY_TIMEOUT: the write that
follows waits only for what is left, so a request waits no longer than it
did without the queue.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

from django.db import transaction

from kindler.db.failover import state, timeouts

# Statements that neither write nor open a transaction of their own.
READS = ("SELECT", "PRAGMA", "EXPLAIN")
FIRST_POLL, LONGEST_POLL = 0.0002, 0.001
# Below this, the wait is not worth two PRAGMA statements to shorten SQLite's.
NOTICEABLE = 0.002

_turn = threading.Lock()
_file: dict[str, Any] = {}  # pid and descriptor of this process's queue file


def queue_path() -> str:
    return str(state.base_path()) + ".writers"


def _descriptor() -> int:
    # A descriptor inherited over fork shares its flock with the parent: each
    # process opens its own.
    if _file.get("pid") != os.getpid():
        _file.update(pid=os.getpid(), fd=os.open(queue_path(), os.O_RDWR | os.O_CREAT, 0o600))
    return int(_file["fd"])


def _flock(deadline: float) -> tuple[bool, bool]:
    """Take the queue file's lock before deadline: return (taken, had to wait for it)."""
    fd = _descriptor()
    pause = FIRST_POLL
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True, waited
        except BlockingIOError:
            waited = True
            if time.monotonic() + pause > deadline:
                return False, waited
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_POLL)


@contextmanager
def writer_turn(connection: Any, budget: float, shorten: bool = False) -> Iterator[None]:
    """Wait (at most budget seconds) for this instance's turn to write on connection."""
    started = time.monotonic()
    deadline = started + budget
    # Only a turn another writer held counts as a wait: time lost to a busy
    # machine between two lines is no reason to shorten SQLite's own wait.
    contended = not _turn.acquire(blocking=False)
    local = _turn.acquire(timeout=budget) if contended else True
    try:
        shared = False
        with suppress(OSError):  # no queue file (read-only folder): SQLite alone decides
            if local:
                shared, queued = _flock(deadline)
                contended = contended or queued
        try:
            waited = time.monotonic() - started
            # Shortened after a wait for the turn, or when asked (a request's deadline).
            shorter = (contended and waited >= NOTICEABLE) or shorten
            if shorter:
                _busy_timeout(connection, max(0.0, budget - waited))
            try:
                yield
            finally:
                if shorter:
                    _restore_busy_timeout(connection)
        finally:
            if shared:
                fcntl.flock(_descriptor(), fcntl.LOCK_UN)
    finally:
        if local:
            _turn.release()


def _busy_timeout(connection: Any, seconds: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")


def _restore_busy_timeout(connection: Any) -> None:
    # The connection's own setting; Python's sqlite3 waits 5 s unless told.
    configured = float(connection.settings_dict["OPTIONS"].get("timeout", 5.0))
    try:
        _busy_timeout(connection, configured)
    except Exception:
        # A connection left with a shorter wait is never reused.
        connection.close()


@contextmanager
def write_transaction(connection: Any, on_begin: Callable[[], None]) -> Iterator[None]:
    """transaction.atomic on SQLite, with BEGIN IMMEDIATE put off until the first write.

    on_begin runs right after BEGIN IMMEDIATE, holding the write lock. Inside
    a transaction already open (a test's), the block is a plain savepoint.
    """
    alias = connection.alias
    budget = float(connection.settings_dict["OPTIONS"].get("timeout", 5.0))
    left = timeouts.request_time_left()
    # The request's deadline covers SQLite's write lock too.
    shorten = left is not None and budget - left >= NOTICEABLE
    if left is not None:
        budget = max(0.0, min(budget, left))
    if connection.in_atomic_block:
        with transaction.atomic(using=alias):
            on_begin()
            yield
        return
    with ExitStack() as turn:
        begun = False

        def begin_before_first_write(
            execute: Any, sql: str, params: Any, many: bool, context: Any
        ) -> Any:
            nonlocal begun
            if not begun and not sql.lstrip()[:8].upper().startswith(READS):
                begun = True  # first: the turn's own PRAGMA passes through here
                turn.enter_context(writer_turn(connection, budget, shorten))
                with connection.cursor() as cursor:
                    cursor.execute("BEGIN IMMEDIATE")
                on_begin()
            return execute(sql, params, many, context)

        connection.ensure_connection()
        # Django opens the transaction on entering atomic(); here the first
        # write does (see above), so entering only marks the block.
        connection._start_transaction_under_autocommit = _no_begin
        try:
            with (
                connection.execute_wrapper(begin_before_first_write),
                transaction.atomic(using=alias),
            ):
                yield
        finally:
            del connection._start_transaction_under_autocommit


def _no_begin() -> None:
    """Start no transaction yet: write_transaction begins it before the first write."""
