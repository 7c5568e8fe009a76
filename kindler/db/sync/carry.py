"""Carry local rows into PostgreSQL: the rows it lacks, or holds in an older version.

Used when PostgreSQL is new (adopted), replaced or restored from an older
dump, by `sync_db --push --all`, and by every full mirror that finds a local
row PostgreSQL lacks. Each chunk is one PostgreSQL transaction under the
replay's global advisory lock, so instances carrying rows into one database
at once take turns and see each other's rows. Rows are matched by uid:

- a row PostgreSQL lacks is inserted with its uid and version; one it holds
  in a lower version is overwritten with the local copy;
- a row PostgreSQL deleted (a tombstone in its change log) is not: the
  delete reaches SQLite instead;
- a row whose unique name or exclusive value (a host port) another uid
  holds becomes an open conflict, both versions kept (insert/insert for a
  row PostgreSQL lacks, update/update for an older copy);
- a row with a conflict already recorded is left to that conflict.

Every row written is logged and listed in RestoredRow, with why.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connections, transaction
from psycopg2.extras import execute_values

from kindler.db import POSTGRES, SQLITE
from kindler.db.models import Conflict, ConflictKind
from kindler.db.sync.journal import CHANGE_TABLE, instance_id
from kindler.db.sync.locks import hold_global_lock
from kindler.db.sync.tables import Table, row_name

logger = logging.getLogger("kindler.db")

CHUNK = 5000
# Adopting a database writes thousands of rows: name the first ones in the
# log, count the rest (RestoredRow lists them all).
LOGGED_ROWS = 20


@dataclass
class CarryReport:
    """What carrying rows into PostgreSQL did."""

    restored: list[tuple[str, str, str, str]] = field(default_factory=list)
    conflicts: int = 0
    skipped: int = 0
    dry_run: bool = False
    # Rows SQLite must copy again from PostgreSQL (conflicts, tombstones).
    refresh: dict[str, set[uuid.UUID]] = field(default_factory=dict, repr=False)

    def merge(self, other: CarryReport) -> None:
        self.restored += other.restored
        self.conflicts += other.conflicts
        self.skipped += other.skipped
        for label, uids in other.refresh.items():
            self.refresh.setdefault(label, set()).update(uids)

    def summary(self) -> str:
        return f"restored {len(self.restored)}, conflicts {self.conflicts}"


def local_rows(table: Table, uids: list[str] | None = None) -> Iterator[list[tuple[Any, ...]]]:
    """Yield SQLite's rows of table in chunks (columns in table order), all or these uids."""
    cursor = connections[SQLITE].cursor()
    if uids is None:
        cursor.execute(f"SELECT {table.quoted()} FROM {table.name} ORDER BY id")
        while chunk := cursor.fetchmany(CHUNK):
            yield chunk
        return
    for start in range(0, len(uids), CHUNK):
        part = uids[start : start + CHUNK]
        marks = ", ".join("?" * len(part))
        cursor.execute(f"SELECT {table.quoted()} FROM {table.name} WHERE uid IN ({marks})", part)
        yield cursor.fetchall()


def carry(
    table: Table,
    chunks: Iterator[list[tuple[Any, ...]]],
    why: str,
    *,
    dry_run: bool = False,
) -> CarryReport:
    """Write these SQLite rows into PostgreSQL where it lacks them or holds them older."""
    report = CarryReport(dry_run=dry_run)
    instance = instance_id()
    logged = 0
    for chunk in chunks:
        if chunk:
            done = _carry_chunk(table, chunk, why, instance, dry_run)
            for label, uid, name, reason in done.restored[: max(LOGGED_ROWS - logged, 0)]:
                logger.warning(
                    "Wrote %s %s (%s) back into PostgreSQL: %s", label, name or "-", uid, reason
                )
            logged += len(done.restored)
            report.merge(done)
    if logged > LOGGED_ROWS:
        logger.warning(
            "Wrote %d more %s rows back into PostgreSQL (%s); see the restored rows",
            logged - LOGGED_ROWS,
            table.model._meta.label_lower,
            why,
        )
    return report


def _carry_chunk(
    table: Table, chunk: list[tuple[Any, ...]], why: str, instance: uuid.UUID, dry_run: bool
) -> CarryReport:
    label = str(table.model._meta.label_lower)
    report = CarryReport(dry_run=dry_run)
    local = {}
    for values in chunk:
        row = dict(zip(table.attnames, values, strict=True))
        row["uid"] = uuid.UUID(str(row["uid"]))
        local[row["uid"]] = row
    uids = sorted(local)
    with transaction.atomic(using=POSTGRES), connections[POSTGRES].cursor() as cursor:
        hold_global_lock(cursor)
        remote = _fetch(cursor, table, "uid", [str(uid) for uid in uids])
        dropped = dropped_uids(cursor, label, [str(uid) for uid in uids])
        todo = []
        for uid in uids:
            copy = remote.get(uid)
            if copy is None and uid in dropped:
                report.refresh.setdefault(label, set()).add(uid)
            elif copy is None or int(local[uid]["version"]) > int(copy["version"]):
                todo.append(uid)
        holders = Holders(cursor, table, [local[uid] for uid in todo])
        for copy in remote.values():
            holders.add(copy)
        taken, clashing = holders.settle([local[uid] for uid in todo])
        for row, holder in clashing:
            _conflict(table, row, remote.get(row["uid"]), holder, instance, report)
        fresh = [row for row in taken if row["uid"] not in remote]
        older = [row for row in taken if row["uid"] in remote]
        _write(cursor, table, fresh, older)
        report.restored = [(label, str(row["uid"]), row_name(row), why) for row in taken]
        _record(cursor, report.restored, instance)
        if dry_run:
            transaction.set_rollback(True, using=POSTGRES)
    return report


def dropped_uids(cursor: Any, label: str, uids: list[str]) -> set[uuid.UUID]:
    """Return the uids (given as text) PostgreSQL deleted (tombstones) or keeps in a conflict."""
    if not uids:
        return set()
    cursor.execute(
        f"SELECT uid FROM {CHANGE_TABLE} WHERE model = %s AND deleted AND uid = ANY(%s::uuid[]) "
        "UNION SELECT row_uid::uuid FROM kindler_db_conflict "
        "WHERE model = %s AND row_uid::uuid = ANY(%s::uuid[])",
        [label, uids, label, uids],
    )
    return {uid if isinstance(uid, uuid.UUID) else uuid.UUID(str(uid)) for (uid,) in cursor}


def _fetch(cursor: Any, table: Table, column: str, values: list[Any]) -> dict[uuid.UUID, Any]:
    cast = f"::{table.model._meta.get_field(column).db_type(connections[POSTGRES])}[]"
    cursor.execute(
        f'SELECT {table.quoted()} FROM {table.name} WHERE "{column}" = ANY(%s{cast}) FOR UPDATE',
        [values],
    )
    rows = (table.from_db(values_row) for values_row in cursor.fetchall())
    return {row["uid"]: row for row in rows}


class Holders:
    """Which uid holds each unique name and exclusive value in PostgreSQL, kept current."""

    def __init__(self, cursor: Any, table: Table, rows: list[dict[str, Any]]) -> None:
        self.table = table
        self.rows: dict[uuid.UUID, dict[str, Any]] = {}
        self.held: dict[tuple[Any, ...], uuid.UUID] = {}
        for name in table.unique_names:
            values = sorted({row[name] for row in rows if row[name] is not None})
            if values:
                for row in _fetch(cursor, table, name, values).values():
                    self.add(row)
        columns = table.exclusive
        values = sorted({row[c] for row in rows for c in columns if row[c] is not None})
        if values:
            match = " OR ".join(f'"{c}" = ANY(%s)' for c in columns)
            cursor.execute(
                f"SELECT {table.quoted()} FROM {table.name} WHERE {match} FOR UPDATE",
                [values] * len(columns),
            )
            for values_row in cursor.fetchall():
                self.add(table.from_db(values_row))

    def _keys(self, row: dict[str, Any]) -> list[tuple[Any, ...]]:
        keys: list[tuple[Any, ...]] = [
            (name, row[name]) for name in self.table.unique_names if row[name] is not None
        ]
        # Exclusive values are one pool across their columns, per scope.
        return keys + self.table.exclusive_keys(row)

    def add(self, row: dict[str, Any]) -> None:
        old = self.rows.get(row["uid"])
        if old is not None:
            for key in self._keys(old):
                if self.held.get(key) == row["uid"]:
                    del self.held[key]
        self.rows[row["uid"]] = row
        for key in self._keys(row):
            self.held[key] = row["uid"]

    def clash(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Return the other row holding one of row's unique or exclusive values."""
        for key in self._keys(row):
            other = self.held.get(key)
            if other is not None and other != row["uid"]:
                return self.rows[other]
        return None

    def settle(
        self, rows: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], dict[str, Any]]]]:
        """Return the rows that can be written, in a workable order, and those that clash.

        Repeated until nothing moves: a row may free a value another needs.
        """
        taken: list[dict[str, Any]] = []
        waiting = rows
        while waiting:
            later = []
            for row in waiting:
                if self.clash(row) is None:
                    self.add(row)
                    taken.append(row)
                else:
                    later.append(row)
            if len(later) == len(waiting):
                break
            waiting = later
        clashing = [(row, self.clash(row) or {}) for row in waiting]
        return taken, clashing


def _conflict(
    table: Table,
    row: dict[str, Any],
    copy: dict[str, Any] | None,
    holder: dict[str, Any],
    instance: uuid.UUID,
    report: CarryReport,
) -> None:
    label = str(table.model._meta.label_lower)
    local = table.from_sqlite([row[a] if a != "uid" else row[a].hex for a in table.attnames])
    Conflict.objects.using(POSTGRES).create(
        kind=ConflictKind.INSERT_INSERT if copy is None else ConflictKind.UPDATE_UPDATE,
        model=label,
        row_uid=str(row["uid"]),
        name=row_name(local),
        instance_id=instance,
        seq=0,
        base=None,
        local=local,
        remote=holder if copy is None else copy,
    )
    report.conflicts += 1
    refresh = report.refresh.setdefault(label, set())
    refresh.update({row["uid"], holder["uid"]})
    logger.warning(
        "Kept %s %s (%s) as a conflict: %s holds its name or a port",
        label,
        row_name(local) or "-",
        row["uid"],
        row_name(holder) or holder.get("uid"),
    )


def _write(
    cursor: Any, table: Table, fresh: list[dict[str, Any]], older: list[dict[str, Any]]
) -> None:
    connection = connections[POSTGRES]
    casts = table.casts(connection)
    assignments = ", ".join(f'"{c}" = v."{c}"' for c in table.columns)
    # One at a time and in order: a row may take a value the previous one freed.
    for row in older:
        execute_values(
            cursor.cursor,
            f"UPDATE {table.name} AS t SET {assignments} FROM (VALUES %s) "
            f"AS v({table.quoted()}) WHERE t.uid = v.uid",
            [[str(row[a]) if a == "uid" else row[a] for a in table.attnames]],
            template=casts,
        )
    if fresh:
        attnames = table.attnames
        _insert(cursor, table.name, table.columns, ([row[a] for a in attnames] for row in fresh))


def _insert(cursor: Any, name: str, columns: list[str], rows: Iterator[list[Any]]) -> None:
    """Insert rows in one statement: the values as SQLite gave them, as one JSON array.

    An adopted database gets every row at once; one parameter carries a
    chunk. PostgreSQL reads each value with its column's text input, where
    SQLite's 0/1 booleans, hex uuids and ISO timestamps are valid as they are.
    """
    data = json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str)
    quoted = ", ".join(f'"{c}"' for c in columns)
    cursor.execute(
        f"INSERT INTO {name} ({quoted}) SELECT {quoted} "
        f"FROM json_populate_recordset(NULL::{name}, %s::json)",
        [data],
    )


def _record(cursor: Any, restored: list[tuple[str, str, str, str]], instance: uuid.UUID) -> None:
    if restored:
        now = datetime.now(UTC).isoformat()
        _insert(
            cursor,
            "kindler_db_restoredrow",
            ["model", "row_uid", "name", "why", "instance_id", "restored_at"],
            ([label, uid, name[:100], why, instance, now] for label, uid, name, why in restored),
        )
