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

carry_deletes() does the same for deletes: after a restore or a failover,
a row PostgreSQL holds again that this SQLite file keeps a tombstone of is
deleted again (listed as "deleted"), unless PostgreSQL changed it after the
delete (a higher version): then it stays, as a delete/update conflict.

carry_diverged() covers the rows both sides hold at the same version after
a restore, a failover or a restart. Versions cannot tell them apart: an
update this instance acknowledged that the new server lost, and another
writer's change there made on the version before it, end at the same
number. Their contents can: the same version with different fields (uid,
version and the automatic timestamps aside) is an update/update conflict,
both kept, and PostgreSQL's side stays. Equal contents are nothing: a
restart that lost nothing records no conflict.

carry_lost() covers the rows whose versions differ but may still hide a
lost save: the versions this instance acknowledged (kindler.db.sync.
acknowledged) tell whether PostgreSQL's older version is one of them or
another writer's, and whether its newer one still carries the last save
acknowledged here. A lost save is an update/update conflict, both kept.
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
from kindler.db.models import Conflict, ConflictKind, RestoredWhy
from kindler.db.sync.acknowledged import Acknowledged
from kindler.db.sync.journal import CHANGE_TABLE, instance_id
from kindler.db.sync.locks import hold_global_lock
from kindler.db.sync.tables import Table, comparable, row_name

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
    # A new database getting this file's rows is expected, not news: the
    # caller says it once (kindler.db.sync.adopt). A restored or replaced
    # one lacking rows is, row by row.
    logged = LOGGED_ROWS if why == RestoredWhy.ADOPTED else 0
    for chunk in chunks:
        if chunk:
            done = _carry_chunk(table, chunk, why, instance, dry_run)
            for label, uid, name, reason in done.restored[: max(LOGGED_ROWS - logged, 0)]:
                logger.warning(
                    "Wrote %s %s (%s) back into PostgreSQL: %s", label, name or "-", uid, reason
                )
            logged += len(done.restored)
            report.merge(done)
    if logged > LOGGED_ROWS and why != RestoredWhy.ADOPTED:
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


def carry_deletes(
    table: Table, tombstones: dict[uuid.UUID, int], *, dry_run: bool = False
) -> CarryReport:
    """Delete again the rows PostgreSQL holds that were deleted at these versions."""
    report = CarryReport(dry_run=dry_run)
    label = str(table.model._meta.label_lower)
    instance = instance_id()
    uids = sorted(tombstones)
    for start in range(0, len(uids), CHUNK):
        part = [str(uid) for uid in uids[start : start + CHUNK]]
        with transaction.atomic(using=POSTGRES), connections[POSTGRES].cursor() as cursor:
            hold_global_lock(cursor)
            remote = _fetch(cursor, table, "uid", part)
            gone = [row for uid, row in remote.items() if int(row["version"]) <= tombstones[uid]]
            for uid, row in remote.items():
                if int(row["version"]) > tombstones[uid]:
                    _deleted_here(table, row, instance, report)
            if gone:
                cursor.execute(
                    f"DELETE FROM {table.name} WHERE uid = ANY(%s::uuid[])",
                    [[str(row["uid"]) for row in gone]],
                )
            why = str(RestoredWhy.DELETED)
            done = [(label, str(row["uid"]), row_name(row), why) for row in gone]
            _record(cursor, done, instance)
            if dry_run:
                transaction.set_rollback(True, using=POSTGRES)
        for _label, row_uid, name, _why in done[:LOGGED_ROWS]:
            logger.warning("Deleted %s %s (%s) again in PostgreSQL", label, name or "-", row_uid)
        report.restored += done
    return report


def _deleted_here(
    table: Table, row: dict[str, Any], instance: uuid.UUID, report: CarryReport
) -> None:
    _keep_conflict(
        table,
        ConflictKind.DELETE_UPDATE,
        None,
        row,
        instance,
        report,
        "deleted here, changed in PostgreSQL since",
    )


def _keep_conflict(
    table: Table,
    kind: str,
    local: dict[str, Any] | None,
    remote: dict[str, Any],
    instance: uuid.UUID,
    report: CarryReport,
    why: str,
) -> None:
    """Record a conflict a merge found, PostgreSQL's side kept, and refresh SQLite's copy."""
    label = str(table.model._meta.label_lower)
    name = row_name(local if local is not None else remote)
    Conflict.objects.using(POSTGRES).create(
        kind=kind,
        model=label,
        row_uid=str(remote["uid"]),
        name=name,
        instance_id=instance,
        seq=0,
        base=None,
        local=local,
        remote=remote,
    )
    report.conflicts += 1
    report.refresh.setdefault(label, set()).add(remote["uid"])
    logger.warning("Kept %s %s (%s) as a conflict: %s", label, name or "-", remote["uid"], why)


def carry_diverged(
    table: Table, chunks: Iterator[list[tuple[Any, ...]]], *, dry_run: bool = False
) -> CarryReport:
    """Record a conflict for each of these SQLite rows PostgreSQL holds otherwise, same version."""
    report = CarryReport(dry_run=dry_run)
    label = str(table.model._meta.label_lower)
    instance = instance_id()
    for chunk in chunks:
        local = {}
        for values in chunk:
            row = table.from_sqlite(values)
            local[uuid.UUID(str(row["uid"]))] = row
        # Compared without locks first: nearly always every row is the same.
        with connections[POSTGRES].cursor() as cursor:
            remote = _select(cursor, table, [str(uid) for uid in local])
        suspects = [str(uid) for uid, row in remote.items() if _differ(table, local[uid], row)]
        if not suspects:
            continue
        with transaction.atomic(using=POSTGRES), connections[POSTGRES].cursor() as cursor:
            hold_global_lock(cursor)
            remote = _fetch(cursor, table, "uid", suspects)
            dropped = dropped_uids(cursor, label, suspects)
            for uid, row in remote.items():
                mine = local[uid]
                if (
                    uid in dropped
                    or int(row["version"]) != int(mine["version"])
                    or not _differ(table, mine, row)
                ):
                    continue
                _diverged(table, mine, row, instance, report)
            if dry_run:
                transaction.set_rollback(True, using=POSTGRES)
    return report


def carry_lost(
    table: Table,
    kept: dict[str, Acknowledged],
    uids: list[str],
    why: str,
    *,
    dry_run: bool = False,
) -> CarryReport:
    """Merge the rows whose PostgreSQL version may lack a save acknowledged here.

    A lost save is a conflict, both kept, PostgreSQL's side staying; a row
    that lost nothing is written back (PostgreSQL's is older) or copied
    into SQLite (PostgreSQL's is newer), as versions alone would decide.
    """
    report = CarryReport(dry_run=dry_run)
    label = str(table.model._meta.label_lower)
    instance = instance_id()
    back: list[str] = []
    for chunk in local_rows(table, uids):
        local = {}
        for values in chunk:
            row = table.from_sqlite(values)
            local[row["uid"]] = row
        with transaction.atomic(using=POSTGRES), connections[POSTGRES].cursor() as cursor:
            hold_global_lock(cursor)
            remote = _fetch(cursor, table, "uid", [str(uid) for uid in local])
            dropped = dropped_uids(cursor, label, [str(uid) for uid in local])
            for uid, mine in local.items():
                theirs = remote.get(uid)
                if theirs is None:
                    continue  # deleted meanwhile: the next full merge sees it
                why_lost = None if uid in dropped else kept[uid.hex].lacks(table, mine, theirs)
                if why_lost is not None:
                    _keep_conflict(
                        table, ConflictKind.UPDATE_UPDATE, mine, theirs, instance, report, why_lost
                    )
                elif int(mine["version"]) > int(theirs["version"]):
                    back.append(uid.hex)
                else:
                    report.refresh.setdefault(label, set()).add(uid)
            if dry_run:
                transaction.set_rollback(True, using=POSTGRES)
    if back:
        report.merge(carry(table, local_rows(table, back), why, dry_run=dry_run))
    return report


def _select(cursor: Any, table: Table, uids: list[str]) -> dict[uuid.UUID, Any]:
    cursor.execute(f"SELECT {table.quoted()} FROM {table.name} WHERE uid = ANY(%s::uuid[])", [uids])
    rows = (table.from_db(values_row) for values_row in cursor.fetchall())
    return {row["uid"]: row for row in rows}


def _differ(table: Table, local: dict[str, Any], remote: dict[str, Any]) -> bool:
    """Return True when the two copies of a row differ in a field a writer sets."""
    return any(
        comparable(f, local[f.attname]) != comparable(f, remote[f.attname]) for f in table.written
    )


def _diverged(
    table: Table,
    local: dict[str, Any],
    remote: dict[str, Any],
    instance: uuid.UUID,
    report: CarryReport,
) -> None:
    _keep_conflict(
        table,
        ConflictKind.UPDATE_UPDATE,
        local,
        remote,
        instance,
        report,
        f"PostgreSQL holds another change at version {remote['version']}",
    )


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
