"""Carry the journal into PostgreSQL: in order, exactly once, conflicts kept.

Entries are read oldest first and applied in batches. Each batch is one
PostgreSQL transaction that holds a global advisory lock (so two instances
never check-then-write the same row at once) and records every entry's
(instance id, sequence) in AppliedEntry; only after it commits are the
entries removed from SQLite. A replay killed between the two finds its
entries already recorded and skips them: nothing is applied twice. A
second process of the same instance waits its turn on a per-instance file
lock (kindler.db.sync.locks), never a session-level lock in PostgreSQL.

An update or delete applies as is if PostgreSQL's row still has the version
the change was made on. Otherwise an update is merged field by field against
the journaled row it was made on (entry.before): the fields changed here are
applied onto PostgreSQL's row, those changed there stay, and the version
moves past PostgreSQL's. Only a field changed on both sides to different
values makes a Conflict (update/update). `uid`, `version` and automatic
timestamps (auto_now, auto_now_add) never conflict: the merged row keeps the
later timestamp. A delete against a changed row, and an update against a
deleted one, are conflicts as well; the row is then left alone, and later
entries continuing the same conflicted local history are folded into that
conflict rather than applied over the other side.

A replayed insert or update that would take a unique name, or a value of
the model's exclusive_fields (a cluster's host ports), that another row in
PostgreSQL holds becomes a conflict too (insert/insert, update/update):
never a second holder, never a failed batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, transaction
from django.db.models import Max
from psycopg2.extras import execute_values

from kindler.db import POSTGRES, SQLITE
from kindler.db.models import Conflict, ConflictKind, JournalEntry, Op
from kindler.db.sync import runs
from kindler.db.sync.journal import CHANGE_TABLE, instance_id
from kindler.db.sync.locks import hold_global_lock, instance_lock
from kindler.db.sync.mirror import refresh
from kindler.db.sync.tables import (
    Table,
    decode_for_replay,
    decode_sqlite_json,
    table_for,
    to_python,
)

BATCH = 1000
LOCK_WAIT = 30.0

Progress = Callable[[int, int], None]


class ReplayError(Exception):
    """The replay stopped; the journal is kept as it was."""


@dataclass
class ReplayReport:
    total: int = 0
    pushed: int = 0
    skipped: int = 0
    conflicts: int = 0
    merged: int = 0
    dry_run: bool = False
    refresh: dict[str, set[uuid.UUID]] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "pushed": self.pushed,
            "skipped": self.skipped,
            "conflicts": self.conflicts,
            "merged": self.merged,
            "dry_run": self.dry_run,
        }

    def summary(self) -> str:
        return f"pushed {self.pushed}, skipped {self.skipped}, conflicts {self.conflicts}"


def replay(*, dry_run: bool = False, progress: Progress | None = None) -> ReplayReport:
    """Replay this instance's journal into PostgreSQL and report what happened."""
    with runs.recorded(runs.REPLAY, dry_run) as outcome:
        report = _replay(dry_run, progress)
        if report.total:
            outcome.summary = report.summary()
    return report


def _replay(dry_run: bool, progress: Progress | None) -> ReplayReport:
    journal = JournalEntry.objects.using(SQLITE)
    report = ReplayReport(total=journal.count(), dry_run=dry_run)
    if not report.total:
        return report
    instance = instance_id()
    outer = transaction.atomic(using=POSTGRES) if dry_run else nullcontext()
    # Web workers sharing one SQLite file all recover at once: one replays,
    # the others wait their turn and then find the journal empty.
    with instance_lock(LOCK_WAIT) as held, outer:
        if not held:
            raise ReplayError("another process of this instance is replaying its journal")
        # Another process may have replayed meanwhile.
        report.total = journal.count()
        # Only what is journaled now: writers keep adding entries while the
        # instance recovers, and chasing them could go on for ever. What comes
        # after is drained under SQLite's write lock (failover.state.promote).
        upto = journal.aggregate(last=Max("id"))["last"] or 0
        last_seq, done = 0, 0
        pending = journal.filter(id__lte=upto).order_by("id")
        while entries := list(pending.filter(id__gt=last_seq)[:BATCH]):
            last_seq = entries[-1].pk
            _apply_batch(instance, entries, report)
            if not dry_run:
                journal.filter(id__in=[e.pk for e in entries]).delete()
            done += len(entries)
            report.total = max(report.total, done)
            if progress is not None:
                progress(done, report.total)
        if dry_run:
            transaction.set_rollback(True, using=POSTGRES)
    if report.refresh and not dry_run:
        refresh(report.refresh)
    return report


class RemoteState:
    """PostgreSQL's rows for one batch, kept current as the batch applies."""

    def __init__(self, cursor: Any, instance: uuid.UUID, entries: list[JournalEntry]) -> None:
        self.cursor = cursor
        self.rows: dict[tuple[str, uuid.UUID], dict[str, Any] | None] = {}
        self.unique: dict[tuple[Any, ...], uuid.UUID] = {}
        self.open: dict[tuple[str, uuid.UUID], tuple[int, int | None]] = {}
        self.original: set[tuple[str, uuid.UUID]] = set()
        self.dirty: dict[str, set[uuid.UUID]] = {}
        # Rows PostgreSQL's change log says were deleted there.
        self.tombstones: set[tuple[str, uuid.UUID]] = set()
        by_model: dict[str, list[JournalEntry]] = {}
        for entry in entries:
            by_model.setdefault(entry.model, []).append(entry)
        for label, group in by_model.items():
            self._load(label, group)
        self._load_conflicts(instance, entries)

    def _load(self, label: str, entries: list[JournalEntry]) -> None:
        table = table_for(label)
        uids = sorted({uuid.UUID(e.uid) for e in entries})
        for uid in uids:
            self.rows[(label, uid)] = None
        self._fetch(table, ["uid"], uids)
        self.cursor.execute(
            f"SELECT uid FROM {CHANGE_TABLE} WHERE model = %s AND deleted AND uid = ANY(%s)",
            [label, uids],
        )
        self.tombstones.update((label, uid) for (uid,) in self.cursor.fetchall())
        written = [decode_for_replay(label, e.data) for e in entries if e.op != Op.DELETE]
        for name in table.unique_names:
            values = sorted({row[name] for row in written if row and row[name] is not None})
            if values:
                self._fetch(table, [name], values)
        columns = table.exclusive
        values = sorted({row[c] for row in written if row for c in columns if row[c] is not None})
        if values:
            self._fetch(table, columns, values)

    def _fetch(self, table: Table, columns: list[str], values: list[Any]) -> None:
        # FOR UPDATE: the rows cannot change under the decisions made here.
        match = " OR ".join(f'"{column}" = ANY(%s)' for column in columns)
        self.cursor.execute(
            f"SELECT {table.quoted()} FROM {table.name} WHERE {match} FOR UPDATE",
            [values] * len(columns),
        )
        label = table.model._meta.label_lower
        for values_row in self.cursor.fetchall():
            row = table.from_db(values_row)
            self.original.add((label, row["uid"]))
            self.put(table, row)

    def _load_conflicts(self, instance: uuid.UUID, entries: list[JournalEntry]) -> None:
        row_uids = sorted({str(uuid.UUID(e.uid)) for e in entries})
        self.cursor.execute(
            "SELECT id, model, row_uid, (local->>'version')::bigint FROM kindler_db_conflict "
            "WHERE resolved_at IS NULL AND instance_id = %s AND row_uid = ANY(%s)",
            [instance, row_uids],
        )
        for pk, label, row_uid, version in self.cursor.fetchall():
            self.open[(label, uuid.UUID(row_uid))] = (pk, version)

    def row(self, label: str, uid: uuid.UUID) -> dict[str, Any] | None:
        return self.rows.get((label, uid))

    def clash(self, table: Table, local: dict[str, Any]) -> dict[str, Any] | None:
        """Return another row holding one of local's unique or exclusive values."""
        label = table.model._meta.label_lower
        for key in _held_keys(table, local):
            other = self.unique.get((label, *key))
            if other is not None and other != local["uid"]:
                return self.rows.get((label, other))
        return None

    def put(self, table: Table, row: dict[str, Any], dirty: bool = False) -> None:
        label = table.model._meta.label_lower
        if dirty:
            self.dirty.setdefault(label, set()).add(row["uid"])
        old = self.rows.get((label, row["uid"]))
        if old is not None:
            self.forget_unique(table, old)
        self.rows[(label, row["uid"])] = row
        for key in _held_keys(table, row):
            self.unique[(label, *key)] = row["uid"]

    def remove(self, table: Table, uid: uuid.UUID, dirty: bool = False) -> None:
        label = table.model._meta.label_lower
        if dirty:
            self.dirty.setdefault(label, set()).add(uid)
        old = self.rows.get((label, uid))
        if old is not None:
            self.forget_unique(table, old)
        self.rows[(label, uid)] = None

    def forget_unique(self, table: Table, row: dict[str, Any]) -> None:
        label = table.model._meta.label_lower
        for key in _held_keys(table, row):
            if self.unique.get((label, *key)) == row["uid"]:
                del self.unique[(label, *key)]


def _held_keys(table: Table, row: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Return the values row holds alone: its unique names, and its exclusive values."""
    keys: list[tuple[Any, ...]] = [
        (name, row[name]) for name in table.unique_names if row[name] is not None
    ]
    return keys + table.exclusive_keys(row)


def _apply_batch(instance: uuid.UUID, entries: list[JournalEntry], report: ReplayReport) -> None:
    with transaction.atomic(using=POSTGRES), connections[POSTGRES].cursor() as cursor:
        hold_global_lock(cursor)
        # The entries leave SQLite once this commits: the commit must be
        # durable even on a server running with synchronous_commit off.
        cursor.execute("SET LOCAL synchronous_commit = on")
        cursor.execute(
            "SELECT seq FROM kindler_db_appliedentry WHERE instance_id = %s AND seq = ANY(%s)",
            [instance, [e.pk for e in entries]],
        )
        already = {seq for (seq,) in cursor.fetchall()}
        report.skipped += len(already)
        todo = [e for e in entries if e.pk not in already]
        if not todo:
            return
        state = RemoteState(cursor, instance, todo)
        outcomes = [_apply(cursor, state, instance, entry) for entry in todo]
        _write(cursor, state)
        for entry, outcome in zip(todo, outcomes, strict=True):
            if outcome in ("conflict", "merged"):
                _remember_refresh(report, state, entry)
        for outcome in outcomes:
            if outcome in ("applied", "merged"):
                report.pushed += 1
                report.merged += outcome == "merged"
            elif outcome == "conflict":
                report.conflicts += 1
            else:
                report.skipped += 1
        cursor.execute(
            "INSERT INTO kindler_db_appliedentry (instance_id, seq, outcome, applied_at) "
            "SELECT %s, unnest(%s::bigint[]), unnest(%s::text[]), now()",
            [instance, [e.pk for e in todo], outcomes],
        )


def _apply(cursor: Any, state: RemoteState, instance: uuid.UUID, entry: JournalEntry) -> str:
    label = entry.model
    table = table_for(label)
    uid = uuid.UUID(entry.uid)
    local = decode_for_replay(label, entry.data)
    remote = state.row(label, uid)
    open_conflict = state.open.get((label, uid))
    if open_conflict is not None and open_conflict[1] == entry.base_version:
        # This change continues a local history already in conflict: it
        # belongs with it, not on top of PostgreSQL's row.
        Conflict.objects.using(POSTGRES).filter(pk=open_conflict[0]).update(
            local=decode_sqlite_json(label, entry.data), seq=entry.pk
        )
        state.open[(label, uid)] = (open_conflict[0], local["version"] if local else None)
        return "conflict"
    if entry.op == Op.INSERT:
        assert local is not None
        if remote is not None and remote["version"] >= local["version"]:
            return "skipped"  # already carried into PostgreSQL (adopted or restored)
        other = remote if remote is not None else state.clash(table, local)
        if other is not None and other["uid"] != uid:
            return _conflict(state, instance, entry, ConflictKind.INSERT_INSERT, other)
        state.put(table, local, dirty=True)
        return "applied"
    if entry.op == Op.UPDATE:
        assert local is not None
        if remote is None and (label, uid) in state.tombstones:
            return _conflict(state, instance, entry, ConflictKind.UPDATE_DELETE, None)
        if remote is None or remote["version"] < (entry.base_version or 0):
            # PostgreSQL lacks the row without having deleted it, or holds an
            # older copy than this change was made on: it was replaced or
            # restored from a backup. The local row is the newer news.
            if state.clash(table, local) is not None:
                return _conflict(state, instance, entry, ConflictKind.UPDATE_UPDATE, remote)
            state.put(table, local, dirty=True)
            return "applied"
        outcome = "applied"
        if remote["version"] != entry.base_version:
            merged = merge_fields(table, entry, remote)
            if merged is None:
                return _conflict(state, instance, entry, ConflictKind.UPDATE_UPDATE, remote)
            local, outcome = merged, "merged"
        if state.clash(table, local) is not None:
            return _conflict(state, instance, entry, ConflictKind.UPDATE_UPDATE, remote)
        state.put(table, local, dirty=True)
        return outcome
    if remote is None:
        return "skipped"
    if remote["version"] > (entry.base_version or 0):
        return _conflict(state, instance, entry, ConflictKind.DELETE_UPDATE, remote)
    state.remove(table, uid, dirty=True)
    return "applied"


def merge_fields(
    table: Table, entry: JournalEntry, remote: dict[str, Any]
) -> dict[str, Any] | None:
    """Return PostgreSQL's row with the fields this entry changed, or None if both changed one.

    A field counts as changed on a side when it differs from the journaled
    row the change was made on; both sides setting the same value is no
    conflict.
    """
    base = decode_sqlite_json(entry.model, entry.before)
    mine = decode_sqlite_json(entry.model, entry.data)
    raw = decode_for_replay(entry.model, entry.data)
    if base is None or mine is None or raw is None:
        return None
    merged = dict(remote)
    for f in table.fields:
        name = f.attname
        if name in ("uid", "version"):
            continue
        theirs = to_python(f, remote.get(name))
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            stamps = [value for value in (mine[name], theirs) if value is not None]
            merged[name] = max(stamps) if stamps else None
            continue
        if mine[name] == base[name]:
            continue
        if theirs != base[name] and theirs != mine[name]:
            return None
        merged[name] = raw[name]
    merged["version"] = int(remote["version"]) + 1
    return merged


def _write(cursor: Any, state: RemoteState) -> None:
    """Write each changed row's final state: one statement per kind and table.

    The batch is one transaction, so nobody could see the states in between.
    """
    connection = connections[POSTGRES]
    raw = cursor.cursor
    for label, uids in state.dirty.items():
        table = table_for(label)
        final = [(uid, state.rows[(label, uid)]) for uid in sorted(uids)]
        gone = [uid for uid, row in final if row is None and (label, uid) in state.original]
        changed = [row for uid, row in final if row and (label, uid) in state.original]
        fresh = [row for uid, row in final if row and (label, uid) not in state.original]
        if gone:
            cursor.execute(f"DELETE FROM {table.name} WHERE uid = ANY(%s)", [gone])
        casts = table.casts(connection)
        if changed:
            assignments = ", ".join(f'"{c}" = v."{c}"' for c in table.columns)
            execute_values(
                raw,
                f"UPDATE {table.name} AS t SET {assignments} FROM (VALUES %s) "
                f"AS v({table.quoted()}) WHERE t.uid = v.uid",
                [[row[a] for a in table.attnames] for row in changed],
                template=casts,
                page_size=BATCH,
            )
        if fresh:
            execute_values(
                raw,
                f"INSERT INTO {table.name} ({table.quoted()}) VALUES %s",
                [[row[a] for a in table.attnames] for row in fresh],
                template=casts,
                page_size=BATCH,
            )


def _remember_refresh(report: ReplayReport, state: RemoteState, entry: JournalEntry) -> None:
    # SQLite must show PostgreSQL's side of a conflict: this row, and for
    # insert/insert the other row holding its name.
    uids = report.refresh.setdefault(entry.model, set())
    uids.add(uuid.UUID(entry.uid))
    local = decode_for_replay(entry.model, entry.data)
    if local is not None:
        other = state.clash(table_for(entry.model), local)
        if other is not None:
            uids.add(other["uid"])


def _conflict(
    state: RemoteState,
    instance: uuid.UUID,
    entry: JournalEntry,
    kind: str,
    remote: dict[str, Any] | None,
) -> str:
    label = entry.model
    uid = uuid.UUID(entry.uid)
    base = decode_sqlite_json(label, entry.before)
    local = decode_sqlite_json(label, entry.data)
    shown = local or remote or base or {}
    conflict = Conflict.objects.using(POSTGRES).create(
        kind=kind,
        model=label,
        row_uid=str(uid),
        name=str(shown.get("name") or shown.get("cluster_name") or ""),
        instance_id=instance,
        seq=entry.pk,
        base=base,
        local=local,
        remote=remote,
    )
    state.open[(label, uid)] = (conflict.pk, local["version"] if local else None)
    return "conflict"
