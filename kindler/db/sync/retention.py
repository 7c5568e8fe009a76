"""How long an instance keeps what a merge after a failover or restore needs.

Tombstones and the versions an instance acknowledged live in its SQLite file
for KINDLER_TOMBSTONE_DAYS (docs/outages-and-sync.md, "What an instance
keeps"); the mirror's passes drop what is older.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connections, transaction

from kindler.db import SQLITE


def prune(table: str, stamped: str) -> int:
    """Drop the rows of table stamped before KINDLER_TOMBSTONE_DAYS ago; return how many went."""
    days = float(settings.KINDLER_TOMBSTONE_DAYS)
    cutoff = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with connections[SQLITE].cursor() as lite:
        # Read first: a DELETE takes SQLite's write lock even when nothing matches.
        lite.execute(f"SELECT 1 FROM {table} WHERE {stamped} < %s LIMIT 1", [cutoff])
        if lite.fetchone() is None:
            return 0
    with transaction.atomic(using=SQLITE), connections[SQLITE].cursor() as lite:
        lite.execute(f"DELETE FROM {table} WHERE {stamped} < %s", [cutoff])
        return int(lite.rowcount)
