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
from operator import attrgetter
from typing import Any, NamedTuple

from django.db import connections, transaction
from django.db.models import Max

from kindler.db import POSTGRES, SQLITE
from kindler.db.failover.writelock import writer_turn
from kindler.db.models import Conflict, ConflictKind, JournalEntry, Op
from kindler.db.sync import runs
from kindler.db.sync.journal import CHANGE_TABLE, JOURNAL_TABLE, instance_id
from kindler.db.sync.locks import hold_global_lock, instance_lock
from kindler.db.sync.mirror import refresh
from kindler.db.sync.tables import (
    Table,
    array_literal,
    decode_for_replay,
    decode_sqlite_json,
    json_rows,
    table_for,
    to_python,
)

BATCH = 1000
LOCK_WAIT = 30.0

Progress = Callable[[int, int], None]


class Entry(NamedTuple):
    """One journal entry as replay reads it: its columns, no model instance to build."""

    pk: int
    model: str
    uid: str
    op: str
    base_version: int | None
    before: str | None
    data: str | None


COLUMNS = ("id", "model", "uid", "op", "base_version", "before", "data")


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
        while entries := [
            Entry(*row) for row in pending.filter(id__gt=last_seq).values_list(*COLUMNS)[:BATCH]
        ]:
            first_seq, last_seq = last_seq, entries[-1].pk
            _apply_batch(instance, entries, report)
            if not dry_run:
                _forget(first_seq, last_seq)
            done += len(entries)
            report.total = max(report.total, done)
            if progress is not None:
                progress(done, report.total)
        if dry_run:
            transaction.set_rollback(True, using=POSTGRES)
    if report.refresh and not dry_run:
        refresh(report.refresh)
    return report


def _forget(after: int, upto: int) -> None:
    """Remove the journal entries after..upto (one applied batch) from SQLite.

    One statement, not a queryset delete: that would load every entry again
    and send two signals each, while writers wait for SQLite's write lock.
    The range holds exactly the batch: entries are read in id order, and a
    new entry's id is past every id the journal has held (AUTOINCREMENT).
    """
    lite = connections[SQLITE]
    # Requests writing meanwhile (the instance is recovering) take turns for
    # SQLite's write lock: wait in that queue, not in SQLite's growing sleeps.
    with (
        writer_turn(lite, float(lite.settings_dict["OPTIONS"]["timeout"])),
        lite.cursor() as cursor,
    ):
        cursor.execute(f"DELETE FROM {JOURNAL_TABLE} WHERE id > %s AND id <= %s", [after, upto])


class RemoteState:
    """PostgreSQL's rows for one batch, kept current as the batch applies."""

    def __init__(self, cursor: Any, instance: uuid.UUID, entries: list[Entry]) -> None:
        self.cursor = cursor
        self.rows: dict[tuple[str, uuid.UUID], dict[str, Any] | None] = {}
        self.unique: dict[tuple[Any, ...], uuid.UUID] = {}
        # The unique and exclusive values (with their label) that more than
        # one row of the batch holds, on either side: only these can clash,
        # so only these are followed entry by entry.
        self.contested: set[tuple[Any, ...]] = set()
        self.open: dict[tuple[str, uuid.UUID], tuple[int, int | None]] = {}
        self.original: set[tuple[str, uuid.UUID]] = set()
        self.dirty: dict[str, set[uuid.UUID]] = {}
        # Rows PostgreSQL's change log says were deleted there.
        self.tombstones: set[tuple[str, uuid.UUID]] = set()
        # Each entry's row as replay writes it, and its uid, decoded once per batch.
        self.decoded: dict[int, dict[str, Any] | None] = {}
        self.uids: dict[int, uuid.UUID] = {}
        for entry in entries:
            row = decode_for_replay(entry.model, entry.data)
            self.decoded[entry.pk] = row
            self.uids[entry.pk] = row["uid"] if row is not None else uuid.UUID(entry.uid)
        by_model: dict[str, list[Entry]] = {}
        for entry in entries:
            by_model.setdefault(entry.model, []).append(entry)
        for label, group in by_model.items():
            self._load(label, group)
        self._load_conflicts(instance)

    def _load(self, label: str, entries: list[Entry]) -> None:
        table = table_for(label)
        uids = {self.uids[e.pk] for e in entries}
        for uid in uids:
            self.rows[(label, uid)] = None
        texts = array_literal(sorted(uid.hex for uid in uids))
        written = [row for e in entries if (row := self.decoded[e.pk]) is not None]
        # One statement for every row the batch can touch or clash with: by
        # uid, by unique name, by exclusive value (FOR UPDATE: they cannot
        # change under the decisions made here).
        connection = connections[POSTGRES]
        types = {f.attname: f.db_type(connection) for f in table.fields}
        match, params = ['"uid" = ANY(%s::uuid[])'], [texts]
        for name in table.unique_names:
            values = sorted({row[name] for row in written if row[name] is not None})
            if values:
                match.append(f'"{name}" = ANY(%s::{types[name]}[])')
                params.append(array_literal(values))
        held = sorted({row[c] for row in written for c in table.exclusive if row[c] is not None})
        if held:
            match += [f'"{column}" = ANY(%s::{types[column]}[])' for column in table.exclusive]
            params += [array_literal(held)] * len(table.exclusive)
        self.cursor.execute(
            f"SELECT {table.quoted()} FROM {table.name} WHERE {' OR '.join(match)} FOR UPDATE",
            params,
        )
        fetched = [table.from_db(values) for values in self.cursor.fetchall()]
        for row in fetched:
            self.original.add((label, row["uid"]))
            self.rows[(label, row["uid"])] = row
        self.cursor.execute(
            f"SELECT uid FROM {CHANGE_TABLE} "
            "WHERE model = %s AND deleted AND uid = ANY(%s::uuid[])",
            [label, texts],
        )
        self.tombstones.update((label, uid) for (uid,) in self.cursor.fetchall())
        self._find_contested(table, fetched + written)
        if self.contested:
            for row in fetched:
                self._hold(table, row)

    def _find_contested(self, table: Table, rows: list[dict[str, Any]]) -> None:
        # One pass over the batch: a value that pairs with one uid only (the
        # common case) can never clash, and is not followed entry by entry.
        label, scope = table.label, table.scope
        for name in table.unique_names:
            holders: dict[Any, int] = {}
            for row in rows:
                value, uid = row[name], row["uid"].int
                if value is not None and holders.setdefault(value, uid) != uid:
                    self.contested.add((label, name, value))
        scoped: dict[tuple[Any, Any], int] = {}
        for row in rows:
            where, uid = (row.get(scope) if scope else None), row["uid"].int
            for column in table.exclusive:
                value = row[column]
                if value is not None and scoped.setdefault((where, value), uid) != uid:
                    self.contested.add((label, "", where, value))

    def _load_conflicts(self, instance: uuid.UUID) -> None:
        row_uids = array_literal(sorted({str(uid) for uid in self.uids.values()}))
        self.cursor.execute(
            "SELECT id, model, row_uid, (local->>'version')::bigint FROM kindler_db_conflict "
            "WHERE resolved_at IS NULL AND instance_id = %s AND row_uid = ANY(%s::text[])",
            [instance, row_uids],
        )
        for pk, label, row_uid, version in self.cursor.fetchall():
            self.open[(label, uuid.UUID(row_uid))] = (pk, version)

    def row(self, label: str, uid: uuid.UUID) -> dict[str, Any] | None:
        return self.rows.get((label, uid))

    def clash(self, table: Table, local: dict[str, Any]) -> dict[str, Any] | None:
        """Return another row holding one of local's unique or exclusive values."""
        if not self.contested:
            return None
        for key in self._contested_keys(table, local):
            other = self.unique.get(key)
            if other is not None and other != local["uid"]:
                return self.rows.get((table.label, other))
        return None

    def put(self, table: Table, row: dict[str, Any], dirty: bool = False) -> None:
        label = table.label
        if dirty:
            self.dirty.setdefault(label, set()).add(row["uid"])
        if self.contested:
            old = self.rows.get((label, row["uid"]))
            if old is not None:
                self.forget_unique(table, old)
            self._hold(table, row)
        self.rows[(label, row["uid"])] = row

    def remove(self, table: Table, uid: uuid.UUID, dirty: bool = False) -> None:
        label = table.label
        if dirty:
            self.dirty.setdefault(label, set()).add(uid)
        old = self.rows.get((label, uid))
        if old is not None and self.contested:
            self.forget_unique(table, old)
        self.rows[(label, uid)] = None

    def forget_unique(self, table: Table, row: dict[str, Any]) -> None:
        for key in self._contested_keys(table, row):
            if self.unique.get(key) == row["uid"]:
                del self.unique[key]

    def _hold(self, table: Table, row: dict[str, Any]) -> None:
        for key in self._contested_keys(table, row):
            self.unique[key] = row["uid"]

    def _contested_keys(self, table: Table, row: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [key for key in _held_keys(table, row) if key in self.contested]


def _held_keys(table: Table, row: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Return the values row holds alone, with its label: unique names and exclusive values."""
    label = table.label
    keys: list[tuple[Any, ...]] = [
        (label, name, row[name]) for name in table.unique_names if row[name] is not None
    ]
    return keys + [(label, *key) for key in table.exclusive_keys(row)]


def _apply_batch(instance: uuid.UUID, entries: list[Entry], report: ReplayReport) -> None:
    with transaction.atomic(using=POSTGRES), connections[POSTGRES].cursor() as cursor:
        hold_global_lock(cursor)
        # The entries leave SQLite once this commits: the commit must be
        # durable even on a server running with synchronous_commit off.
        cursor.execute("SET LOCAL synchronous_commit = on")
        # A range, which the (instance_id, seq) index answers directly; the
        # batch is read in id order.
        cursor.execute(
            "SELECT seq FROM kindler_db_appliedentry "
            "WHERE instance_id = %s AND seq BETWEEN %s AND %s",
            [instance, entries[0].pk, entries[-1].pk],
        )
        already = {seq for (seq,) in cursor.fetchall()} & {e.pk for e in entries}
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
            [instance, array_literal(e.pk for e in todo), array_literal(outcomes)],
        )


def _apply(cursor: Any, state: RemoteState, instance: uuid.UUID, entry: Entry) -> str:
    label = entry.model
    table = table_for(label)
    uid = state.uids[entry.pk]
    local = state.decoded[entry.pk]
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


def merge_fields(table: Table, entry: Entry, remote: dict[str, Any]) -> dict[str, Any] | None:
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
    The rows go as one JSON parameter (Table.from_json_rows), not a
    formatted placeholder per value.
    """
    connection = connections[POSTGRES]
    for label, uids in state.dirty.items():
        table = table_for(label)
        final = [(uid, state.rows[(label, uid)]) for uid in sorted(uids, key=attrgetter("int"))]
        gone = [str(uid) for uid, row in final if row is None and (label, uid) in state.original]
        changed = [row for uid, row in final if row and (label, uid) in state.original]
        fresh = [row for uid, row in final if row and (label, uid) not in state.original]
        if gone:
            cursor.execute(f"DELETE FROM {table.name} WHERE uid = ANY(%s::uuid[])", [gone])
        rows = table.from_json_rows(connection)
        if changed:
            assignments = ", ".join(f'"{c}" = v."{c}"' for c in table.columns)
            cursor.execute(
                f"UPDATE {table.name} AS t SET {assignments} FROM ({rows}) AS v "
                "WHERE t.uid = v.uid",
                [json_rows(changed)],
            )
        if fresh:
            cursor.execute(
                f"INSERT INTO {table.name} ({table.quoted()}) {rows}", [json_rows(fresh)]
            )


def _remember_refresh(report: ReplayReport, state: RemoteState, entry: Entry) -> None:
    # SQLite must show PostgreSQL's side of a conflict: this row, and for
    # insert/insert the other row holding its name.
    uids = report.refresh.setdefault(entry.model, set())
    uids.add(state.uids[entry.pk])
    local = state.decoded[entry.pk]
    if local is not None:
        other = state.clash(table_for(entry.model), local)
        if other is not None:
            uids.add(other["uid"])


def _conflict(
    state: RemoteState,
    instance: uuid.UUID,
    entry: Entry,
    kind: str,
    remote: dict[str, Any] | None,
) -> str:
    label = entry.model
    uid = state.uids[entry.pk]
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
