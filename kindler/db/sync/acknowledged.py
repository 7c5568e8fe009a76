"""The versions of each row this instance acknowledged, kept to tell what a failover lost.

Versions alone cannot say whether the PostgreSQL that answers after a
failover or a restore lacks a save this instance acknowledged: another
writer may have saved the row there once or twice meanwhile, and the
numbers then meet or pass the lost one. So every save the write-through
copies into SQLite also leaves an AcknowledgedVersion: the version, a
digest of what a writer sets in the row, and which columns the save changed.
A merge then reads, for a row PostgreSQL holds older than this file, whether
PostgreSQL's version is one this instance acknowledged (same digest: an
ancestor, written back) or another writer's (a conflict); and for a row
PostgreSQL holds newer, whether it still carries what this instance's last
acknowledged save set (kindler.db.sync.carry.carry_lost).

Kept KINDLER_TOMBSTONE_DAYS, like the tombstones, and at least the newest
ACKNOWLEDGED_PER_ROW versions of each row (at most twice as many).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections

from kindler.db import SQLITE
from kindler.db.sync import retention
from kindler.db.sync.tables import Table, comparable

TABLE = "kindler_db_acknowledgedversion"
ACKNOWLEDGED_PER_ROW = 20


@dataclass
class Acknowledged:
    """What this instance acknowledged of one row: digests by version, the last save."""

    digests: dict[int, str] = field(default_factory=dict)
    last: int = 0
    # Columns the last save changed; None when it inserted the row.
    changed: list[str] | None = None

    def add(self, version: int, digest: str, changed: str) -> None:
        if digest:
            self.digests[version] = digest
        else:
            self.digests.pop(version, None)
        if version >= self.last:
            self.last = version
            self.changed = changed.split(",") if changed else None

    def in_question(self, local: int, remote: int) -> bool:
        """Return True when PostgreSQL's version may lack a save acknowledged here.

        Older than this file's copy and a version acknowledged here, or newer
        than this file's copy while that copy is the last save acknowledged
        here (an update: a row PostgreSQL holds at all has its insert).
        """
        if remote < local:
            return remote in self.digests
        return remote > local == self.last and self.changed is not None

    def lacks(self, table: Table, local: dict[str, Any], remote: dict[str, Any]) -> str | None:
        """Return how PostgreSQL's row lost a save acknowledged here, or None when it did not."""
        mine, theirs = int(local["version"]), int(remote["version"])
        if theirs < mine:
            known = self.digests.get(theirs)
            if known is not None and known != digest(table, remote):
                return f"PostgreSQL holds another change at version {theirs}"
            return None
        if not self.in_question(mine, theirs):
            return None
        for f in table.written:
            if f.column in (self.changed or ()) and comparable(f, local[f.attname]) != comparable(
                f, remote[f.attname]
            ):
                return f"PostgreSQL's version {theirs} lacks the save acknowledged as {mine}"
        return None


def digest(table: Table, row: dict[str, Any]) -> str:
    """Return a hash of what a writer sets in row, equal for SQLite's and PostgreSQL's copy."""
    values = [comparable(f, row[f.attname]) for f in table.written]
    text = json.dumps(values, cls=DjangoJSONEncoder, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def version_of(
    table: Table,
    before: list[Any] | None,
    after: list[Any],
    whole: bool,
) -> list[Any]:
    """Return the AcknowledgedVersion values of a save, from SQLite's row before and after it.

    A partial save (whole false) leaves SQLite's other columns as they
    were, possibly older than PostgreSQL's: its digest stays unknown.
    """
    row = table.from_sqlite(after)
    changed = ""
    if before is not None:
        written = set(table.written)
        changed = ",".join(
            str(f.column)
            for f, old, new in zip(table.fields, before, after, strict=True)
            if f in written and comparable(f, old) != comparable(f, new)
        )
        # A save that changed nothing a writer sets is still a version.
        changed = changed or "-"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [
        table.model._meta.label_lower,
        row["uid"].hex,
        int(row["version"]),
        digest(table, row) if whole else "",
        changed,
        now,
    ]


def record(cursor: Any, versions: list[list[Any]]) -> None:
    """Keep these acknowledged versions, in the caller's SQLite transaction."""
    if not versions:
        return
    cursor.executemany(
        f"INSERT INTO {TABLE} (model, uid, version, digest, changed, acknowledged_at) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        versions,
    )
    # Trimmed every ACKNOWLEDGED_PER_ROW versions: a row keeps twice that at most.
    for label, uid, version, *_ in versions:
        if version % ACKNOWLEDGED_PER_ROW == 0:
            cursor.execute(
                f"DELETE FROM {TABLE} WHERE model = %s AND uid = %s AND id <= ("
                f"SELECT id FROM {TABLE} WHERE model = %s AND uid = %s "
                "ORDER BY id DESC LIMIT 1 OFFSET %s)",
                [label, uid, label, uid, ACKNOWLEDGED_PER_ROW],
            )


def load(label: str) -> dict[str, Acknowledged]:
    """Return what this file keeps of model label's rows, by uid (hex)."""
    rows: dict[str, Acknowledged] = {}
    with connections[SQLITE].cursor() as cursor:
        cursor.execute(
            f"SELECT uid, version, digest, changed FROM {TABLE} WHERE model = %s ORDER BY id",
            [label],
        )
        for uid, version, hashed, changed in cursor.fetchall():
            rows.setdefault(str(uid), Acknowledged()).add(int(version), str(hashed), str(changed))
    return rows


def prune() -> int:
    """Drop the versions acknowledged before KINDLER_TOMBSTONE_DAYS; return how many went."""
    return retention.prune(TABLE, "acknowledged_at")
