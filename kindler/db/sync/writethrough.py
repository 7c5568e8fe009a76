"""Copy each change committed on PostgreSQL into SQLite as it commits.

The periodic mirror keeps SQLite a warm copy within KINDLER_MIRROR_INTERVAL,
but a failover inside that window would hide a cluster someone was just told
was created (a read-your-writes gap). So every save or delete of a synced
row on PostgreSQL is remembered, and when its transaction commits the row is
written into this instance's SQLite file from the saved object itself, before
the response goes out. Nothing is read back from PostgreSQL, so the copy
holds even when PostgreSQL dies right after the commit.

Each copied save also leaves the version it acknowledged
(kindler.db.sync.acknowledged), read against SQLite's row before it (a row
PostgreSQL has just inserted has none to read), so a merge after a failover
can tell a save the new primary lost.

A row with unreplayed journal entries is left alone (the local change is
newer news), as the mirror does. A failed copy is logged and left to the
next mirror run: the change is safe in PostgreSQL either way.

QuerySet.update() sends no save signal; SyncedQuerySet sends rows_updated
instead, and those rows are read back inside the updating transaction and
copied the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.models import Model

from kindler.db import POSTGRES, SQLITE
from kindler.db.failover.errors import describe_error
from kindler.db.failover.writelock import writer_turn
from kindler.db.models import JournalEntry, SyncedModel
from kindler.db.sync import acknowledged
from kindler.db.sync.journal import journal_suppressed
from kindler.db.sync.tables import table_for

logger = logging.getLogger("kindler.db")

_suppressed: ContextVar[bool] = ContextVar("kindler_writethrough_suppressed", default=False)


@contextmanager
def suppressed() -> Iterator[None]:
    """Write to PostgreSQL without copying into SQLite, as another instance would."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


@dataclass
class Change:
    """One row as a transaction left it: its columns as saved, or None when deleted."""

    values: dict[str, Any] | None
    columns: frozenset[str] | None = None  # the columns saved; None: all of them
    # PostgreSQL inserted the row in this transaction: SQLite has no older copy to read.
    inserted: bool = False

    @classmethod
    def saved(cls, instance: SyncedModel, update_fields: Any, inserted: bool = False) -> Change:
        # Taken at save time: later edits of the object that are never saved
        # must not reach SQLite.

        table = table_for(instance._meta.label_lower)
        row = {name: getattr(instance, name) for name in table.attnames}
        prepared = table.prepare(row, connections[SQLITE])
        values = dict(zip(table.columns, prepared, strict=True))
        if update_fields is None:
            return cls(values, inserted=inserted)
        names = {*update_fields, "version"}
        return cls(values, frozenset(str(f.column) for f in table.fields if f.name in names))

    def then(self, later: Change) -> Change:
        if later.values is None or self.values is None:
            return later
        if self.columns is None or later.columns is None:
            return Change(later.values, inserted=self.inserted)
        return Change(later.values, self.columns | later.columns, self.inserted)


class Batch:
    """The synced rows one PostgreSQL transaction wrote, by (model label, uid)."""

    def __init__(self) -> None:
        self.changes: dict[tuple[str, str], Change] = {}

    def add(self, instance: SyncedModel, change: Change) -> None:
        """Record change, merged with what this transaction did to the row before."""
        key = (instance._meta.label_lower, instance.uid.hex)
        earlier = self.changes.get(key)
        self.changes[key] = change if earlier is None else earlier.then(change)

    def flush(self) -> None:
        changes, self.changes = self.changes, {}
        if changes:
            copy_to_sqlite(changes)


def copy_to_sqlite(changes: dict[tuple[str, str], Change]) -> None:
    """Write these rows into SQLite as they were saved; log, never raise."""

    connection = connections[SQLITE]
    try:
        # PostgreSQL holds the change durably already, and this copy only
        # bridges the mirror interval: a commit that survives a crash of the
        # process (not of the machine) is enough, and spares an fsync
        # (about 2 ms) on every write to PostgreSQL.
        with (
            synchronous_normal(connection),
            # Every worker copies its writes: take turns for SQLite's write
            # lock rather than sleep in SQLite's own growing waits for it.
            writer_turn(connection, float(connection.settings_dict["OPTIONS"]["timeout"])),
            transaction.atomic(using=SQLITE),
            journal_suppressed(),
        ):
            held = journaled(changes)
            versions = []
            for key, change in changes.items():
                # A row with journal entries keeps its local change.
                if key not in held:
                    versions += _copy(*key, change)
            acknowledged.record(connection.cursor(), versions)
    except Exception as exc:
        logger.warning(
            "Copying a change into SQLite failed, the mirror will: %s", describe_error(exc)
        )


@contextmanager
def synchronous_normal(connection: Any) -> Iterator[None]:
    """Commit on SQLite without waiting for the disk, then restore the setting.

    Outside the block every commit keeps synchronous=FULL: during an outage
    SQLite holds the only copy of a write.
    """
    if connection.in_atomic_block:
        # Inside a caller's transaction the setting cannot change; commit as it does.
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous=NORMAL")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA synchronous=FULL")
        except Exception:
            # A connection that may still commit without syncing is never reused.
            connection.close()
            raise


def journaled(changes: dict[tuple[str, str], Change]) -> set[tuple[str, str]]:
    """Return the (label, uid) of these rows that have unreplayed journal entries.

    One query for the whole batch; the journal is empty while PostgreSQL is
    primary, so it answers at once. Written out rather than built by the ORM,
    which took longer to compile the query than SQLite to answer it.
    """
    labels = sorted({label for label, _ in changes})
    marks = ", ".join(["%s"] * len(labels))
    with connections[SQLITE].cursor() as cursor:
        cursor.execute(
            f"SELECT model, uid FROM {JournalEntry._meta.db_table} WHERE model IN ({marks})",
            labels,
        )
        return {(str(label), str(uid).replace("-", "")) for label, uid in cursor.fetchall()}


def _copy(label: str, uid: str, change: Change) -> list[list[Any]]:
    """Write one row into SQLite; return the acknowledged version it leaves (none or one)."""
    table = table_for(label)
    cursor = connections[SQLITE].cursor()
    values = change.values
    if values is None:
        cursor.execute(f"DELETE FROM {table.name} WHERE uid = %s", [uid])
        return []
    before = None
    if not change.inserted:
        cursor.execute(f"SELECT {table.quoted()} FROM {table.name} WHERE uid = %s", [uid])
        before = cursor.fetchone()
    if change.columns is None:
        # One statement: insert the row, or overwrite the copy SQLite has.
        marks = ", ".join(["%s"] * len(table.columns))
        assignments = ", ".join(f'"{c}" = excluded."{c}"' for c in table.columns)
        cursor.execute(
            f"INSERT INTO {table.name} ({table.quoted()}) VALUES ({marks}) "
            f"ON CONFLICT (uid) DO UPDATE SET {assignments}",
            list(values.values()),
        )
        return [acknowledged.version_of(table, before, list(values.values()), whole=True)]
    if before is None:
        # A partial save of a row SQLite does not have yet waits for the mirror.
        return []
    wanted = [c for c in table.columns if c in change.columns]
    assignments = ", ".join(f'"{column}" = %s' for column in wanted)
    cursor.execute(
        f"UPDATE {table.name} SET {assignments} WHERE uid = %s",
        [*(values[column] for column in wanted), uid],
    )
    saved = change.columns
    after = [values[c] if c in saved else old for c, old in zip(table.columns, before, strict=True)]
    return [acknowledged.version_of(table, list(before), after, whole=False)]


def remember_save(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    """Queue a synced row saved on PostgreSQL for copying when its transaction commits."""
    inserted = bool(kwargs.get("created"))
    _remember(instance, using, lambda i: Change.saved(i, kwargs.get("update_fields"), inserted))


def remember_update(sender: type[Model], using: str, pks: list[Any], **kwargs: Any) -> None:
    """Queue rows a QuerySet.update() changed on PostgreSQL, read back inside its transaction.

    Read before the commit, so the copy still holds the values if PostgreSQL
    dies right after it (the reconciler's bookkeeping goes this way).
    """
    if using != POSTGRES or _suppressed.get():
        return
    for instance in sender._base_manager.using(POSTGRES).filter(pk__in=pks):
        _remember(instance, using, lambda i: Change.saved(i, None))


def remember_delete(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    """Queue a synced row deleted on PostgreSQL for removal when its transaction commits."""
    _remember(instance, using, lambda i: Change(None))


def _remember(instance: Model, using: str, change: Any) -> None:
    if using != POSTGRES or not isinstance(instance, SyncedModel) or _suppressed.get():
        return
    connection = connections[POSTGRES]
    if not connection.in_atomic_block:
        copy_to_sqlite({(instance._meta.label_lower, instance.uid.hex): change(instance)})
        return
    batch: Batch | None = getattr(connection, "_kindler_writethrough", None)
    # A rolled-back transaction drops its on_commit callbacks: start a new
    # batch unless this transaction's flush is still registered.
    registered = [entry[1] for entry in connection.run_on_commit]
    if batch is None or batch.flush not in registered:
        batch = Batch()
        connection._kindler_writethrough = batch  # type: ignore[attr-defined]
        transaction.on_commit(batch.flush, using=POSTGRES, robust=True)
    batch.add(instance, change(instance))
