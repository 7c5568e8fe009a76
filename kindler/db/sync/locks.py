"""The PostgreSQL advisory locks that keep instances from writing the same rows at once."""

from __future__ import annotations

from typing import Any

LOCK_NAMESPACE = 0x4B44  # "KD": Kindler database
GLOBAL_LOCK = 0


def hold_global_lock(cursor: Any) -> None:
    """Take the lock every instance's replay, carry and resolve share, until the transaction ends.

    Transaction-scoped, so it is released by the commit or rollback even if
    the connection is pooled or the process dies.
    """
    cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, GLOBAL_LOCK])
