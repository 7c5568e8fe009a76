"""The locks that keep instances, and the processes of one instance, from replaying at once.

Every lock taken in PostgreSQL is transaction-scoped (pg_advisory_xact_lock):
the commit or rollback releases it on the server connection that took it, so
it can neither outlive its holder on a pooled connection nor be released on
another one, which is what PgBouncer's transaction pooling requires. A lock
that must span several transactions (one replay, batch after batch) is a
file lock beside the SQLite file instead: only the processes of one instance
share that file, and the kernel releases the lock when its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from typing import Any

from kindler.db.failover import state

LOCK_NAMESPACE = 0x4B44  # "KD": Kindler database
GLOBAL_LOCK = 0
POLL = 0.05


def hold_global_lock(cursor: Any) -> None:
    """Take the lock every instance's replay, carry and resolve share, until the transaction ends.

    Transaction-scoped, so it is released by the commit or rollback even if
    the connection is pooled or the process dies.
    """
    cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, GLOBAL_LOCK])


def replay_lock_path() -> str:
    """Return the file whose lock one process of this instance holds while it replays."""
    return f"{state.base_path()}.replay-lock"


@contextlib.contextmanager
def instance_lock(wait: float) -> Iterator[bool]:
    """Hold this instance's replay lock, waiting up to wait seconds; yield whether it was taken.

    Every process and thread of the instance (web workers recovering at
    once, `sync_db`) takes its turn; none of them holds anything in
    PostgreSQL meanwhile.
    """
    fd = os.open(replay_lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(POLL)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
