"""Keep the SQLite file a warm copy of PostgreSQL, so a failover shows current data.

Synced rows are matched by uid and copied when PostgreSQL's version is
newer. A row with unreplayed journal entries is never touched: the local
change is newer news than anything PostgreSQL has. After the first run,
only rows PostgreSQL changed since the last run are read (RowChange, by
transaction id), so an unchanged database costs a handful of indexed
queries.

A local row is never deleted just because PostgreSQL lacks it: only a
delete recorded in PostgreSQL's change log (a tombstone), or a conflict
that keeps the row, lets it go. A local row PostgreSQL lacks otherwise, or
holds in an older version, is carried back into it (kindler.db.sync.carry)
and listed as restored. That is how a new database is adopted and a
restored one gets back what its dump missed: when the database's identity
differs from the one this file remembers, its change log went back or its
server moved to a new timeline (a failover; kindler.db.sync.identity), the
run is full and merges both ways. Such a run also deletes again the rows
PostgreSQL holds that this file keeps a tombstone of (a delete the restore
or the failover lost), or keeps them as a conflict when PostgreSQL changed
them after the delete. Rows whose versions differ where PostgreSQL's may
lack a save this instance acknowledged are merged by their contents
(kindler.db.sync.carry.carry_lost).

Users, groups and their permissions are copied whole, with the same ids,
so sessions (which hold the user id) stay valid across a switch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.models import Group, User
from django.db import IntegrityError, connections, transaction
from django.db.models import Model

from kindler.db import POSTGRES, SQLITE
from kindler.db.failover.writelock import writer_turn
from kindler.db.models import RestoredWhy
from kindler.db.sync import acknowledged, identity, retention, runs
from kindler.db.sync.accounts import carry_accounts
from kindler.db.sync.carry import (
    CarryReport,
    carry,
    carry_deletes,
    carry_diverged,
    carry_lost,
    dropped_uids,
    local_rows,
)
from kindler.db.sync.journal import (
    CHANGE_TABLE,
    TOMBSTONE_TABLE,
    journal_suppressed,
    journaled_uids,
    synced_models,
)
from kindler.db.sync.tables import Table, table_for

CHUNK = 500

Progress = Callable[[int, int], None]


@dataclass
class MirrorReport:
    pulled: int = 0
    deleted: int = 0
    skipped: int = 0
    accounts: int = 0
    full: bool = False
    dry_run: bool = False
    # Set when PostgreSQL was new, changed identity, restarted or failed over:
    # "adopted", "restored" or "failover".
    merged: str = ""
    restored: list[tuple[str, str, str, str]] = field(default_factory=list)
    conflicts: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["restored"] = [
            {"model": label, "uid": uid, "name": name, "why": why}
            for label, uid, name, why in self.restored
        ]
        return data

    def summary(self) -> str:
        text = (
            f"pulled {self.pulled}, deleted {self.deleted}, skipped {self.skipped}, "
            f"accounts {self.accounts}"
        )
        if self.restored or self.conflicts:
            text += f", restored {len(self.restored)}, conflicts {self.conflicts}"
        return text


def mirror(
    *, dry_run: bool = False, full: bool = False, progress: Progress | None = None
) -> MirrorReport:
    """Copy what changed in PostgreSQL into SQLite, carry back what it lacks, and report."""
    with runs.recorded(runs.MIRROR, dry_run) as outcome:
        report = _mirror(dry_run, full, progress)
        outcome.summary = report.summary()
    return report


def _mirror(dry_run: bool, full: bool, progress: Progress | None) -> MirrorReport:
    current = identity.read()
    why = identity.change(current, identity.known())
    mark = None if full or why else identity.mark()
    report = MirrorReport(dry_run=dry_run, merged=why or "")
    # A new database never held what this file deleted: only a restore or a
    # failover brings deleted rows back.
    merging = why in (RestoredWhy.RESTORED, RestoredWhy.FAILOVER)
    if why:
        # Before the accounts are mirrored: those PostgreSQL lacks would go.
        report.accounts += carry_accounts(dry_run=dry_run)
    back: dict[str, list[str]] = {}
    undeleted: dict[str, dict[uuid.UUID, int]] = {}
    diverged: dict[str, list[str]] = {}
    lost: dict[str, list[str]] = {}
    outermost = not connections[POSTGRES].in_atomic_block
    with transaction.atomic(using=POSTGRES), connections[POSTGRES].cursor() as pg:
        if outermost:
            # One snapshot for the whole copy (unless nested in a caller's transaction).
            pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        pg.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        )
        xmin, xmax = pg.fetchone()
        if mark is not None and mark > xmax:
            mark = None  # PostgreSQL was recreated: its transaction ids restarted
        report.full = mark is None
        changes = None if mark is None else _changes(pg, mark)
        lite = connections[SQLITE]
        with (
            # The workers' write-through copies wait for this block: in turn,
            # woken when it ends, not sleeping in SQLite's own growing steps.
            writer_turn(lite, float(lite.settings_dict["OPTIONS"]["timeout"])),
            transaction.atomic(using=SQLITE),
            journal_suppressed(),
        ):
            for model in synced_models():
                table = table_for(model._meta.label_lower)
                wanted = None if changes is None else changes.get(table.model._meta.label_lower)
                if changes is not None and not wanted:
                    continue
                label = table.model._meta.label_lower
                tombstones = _tombstones(label) if merging else None
                back[label], undeleted[label], diverged[label], lost[label] = _mirror_model(
                    pg, table, wanted, report, progress, tombstones=tombstones
                )
            report.accounts += mirror_accounts(pg)
            if dry_run:
                transaction.set_rollback(True, using=SQLITE)
    _carry_back(back, undeleted, diverged, lost, why or RestoredWhy.RESTORED, report)
    if not dry_run:
        identity.remember(current, xmin)
        prune_tombstones()
        acknowledged.prune()
    return report


def _carry_back(
    back: dict[str, list[str]],
    undeleted: dict[str, dict[uuid.UUID, int]],
    diverged: dict[str, list[str]],
    lost: dict[str, list[str]],
    why: str,
    report: MirrorReport,
) -> None:
    """Write local rows and deletes PostgreSQL lacks back into it, then show its side."""
    carried = CarryReport(dry_run=report.dry_run)
    for label, uids in lost.items():
        if uids:
            kept = acknowledged.load(label)
            carried.merge(carry_lost(table_for(label), kept, uids, why, dry_run=report.dry_run))
    for label, uids in diverged.items():
        if uids:
            table = table_for(label)
            carried.merge(carry_diverged(table, local_rows(table, uids), dry_run=report.dry_run))
    for label, uids in back.items():
        if uids:
            table = table_for(label)
            carried.merge(carry(table, local_rows(table, uids), why, dry_run=report.dry_run))
    for label, tombstones in undeleted.items():
        if tombstones:
            carried.merge(carry_deletes(table_for(label), tombstones, dry_run=report.dry_run))
    report.restored += carried.restored
    report.conflicts += carried.conflicts
    if carried.refresh and not report.dry_run:
        report.deleted += refresh(carried.refresh).deleted


def refresh(uids: dict[str, set[uuid.UUID]]) -> MirrorReport:
    """Copy these rows from PostgreSQL whatever their versions say (after conflicts).

    A conflict leaves SQLite with the local side and PostgreSQL with the
    other, possibly at the same version number; the local side is kept in
    the conflict, and SQLite must show what PostgreSQL holds.
    """
    report = MirrorReport()
    with (
        transaction.atomic(using=POSTGRES),
        connections[POSTGRES].cursor() as pg,
        transaction.atomic(using=SQLITE),
        journal_suppressed(),
    ):
        for label, wanted in uids.items():
            # Rows still missing here are carried back by the next full run.
            _mirror_model(pg, table_for(label), wanted, report, None, force=True)
    return report


def _tombstones(label: str) -> dict[str, int]:
    """Return the uids (hex) this file keeps a tombstone of, with the version deleted."""
    with connections[SQLITE].cursor() as lite:
        lite.execute(f"SELECT uid, version FROM {TOMBSTONE_TABLE} WHERE model = %s", [label])
        return {str(uid): int(version) for uid, version in lite.fetchall()}


def prune_tombstones() -> int:
    """Drop the tombstones older than KINDLER_TOMBSTONE_DAYS; return how many went."""
    return retention.prune(TOMBSTONE_TABLE, "deleted_at")


def _changes(pg: Any, mark: int) -> dict[str, set[uuid.UUID]]:
    pg.execute(f"SELECT model, uid FROM {CHANGE_TABLE} WHERE xid >= %s", [mark])
    changes: dict[str, set[uuid.UUID]] = {}
    for label, uid in pg.fetchall():
        changes.setdefault(label, set()).add(uid)
    return changes


def _mirror_model(
    pg: Any,
    table: Table,
    wanted: set[uuid.UUID] | None,
    report: MirrorReport,
    progress: Progress | None,
    force: bool = False,
    tombstones: dict[str, int] | None = None,
) -> tuple[list[str], dict[uuid.UUID, int], list[str], list[str]]:
    """Copy table's rows from PostgreSQL; return the local uids to carry back into it.

    With tombstones (a merge after a restore or a failover), a row PostgreSQL
    holds that this file deleted is not copied: it is returned, with the
    version deleted, to be deleted again. So are the rows both sides hold at
    the same version (the third list): their contents are compared after
    this read-only snapshot, and two different rows at one version (a lost
    acknowledged update and another writer's change on the new server) are
    a conflict (kindler.db.sync.carry.carry_diverged). The fourth list holds
    the rows whose versions differ where PostgreSQL's may lack a save this
    instance acknowledged: neither copied nor written back here, they are
    merged by content (kindler.db.sync.carry.carry_lost).
    """
    lite = connections[SQLITE].cursor()
    if wanted is None:
        pg.execute(f"SELECT {table.quoted()} FROM {table.name}")
        remote = {row[0].hex: row for row in _uid_first(pg, table)}
        lite.execute(f"SELECT uid, version FROM {table.name}")
        local = dict(lite.fetchall())
    else:
        uids = sorted(wanted)
        remote = {}
        for chunk in _chunks(uids):
            pg.execute(f"SELECT {table.quoted()} FROM {table.name} WHERE uid = ANY(%s)", [chunk])
            remote.update({row[0].hex: row for row in _uid_first(pg, table)})
        local = {}
        for chunk in _chunks([u.hex for u in uids]):
            marks = ", ".join("?" * len(chunk))
            lite.execute(f"SELECT uid, version FROM {table.name} WHERE uid IN ({marks})", chunk)
            local.update(lite.fetchall())
    held = journaled_uids(table.model)
    missing = [uid for uid in local if uid not in remote and uid not in held]
    dropped = {u.hex for u in dropped_uids(pg, table.model._meta.label_lower, missing)}
    gone = [uid for uid in missing if uid in dropped]
    back = [uid for uid in missing if uid not in dropped]
    changed = []
    undeleted: dict[uuid.UUID, int] = {}
    same: list[str] = []
    lost: list[str] = []
    kept = acknowledged.load(table.model._meta.label_lower) if tombstones is not None else {}
    for uid, row in remote.items():
        if uid in held:
            continue
        mine = local.get(uid)
        if mine is None and tombstones and uid in tombstones:
            undeleted[row[0]] = tombstones[uid]
        elif not force and mine is not None and uid in kept and kept[uid].in_question(mine, row[1]):
            lost.append(uid)
        elif force or mine is None or mine < row[1]:
            changed.append(uid)
        elif mine > row[1]:
            back.append(uid)
        elif tombstones is not None and mine == row[1]:
            same.append(uid)
    report.skipped += sum(1 for uid in remote if uid in held)
    for chunk in _chunks(gone):
        lite.execute(
            f"DELETE FROM {table.name} WHERE uid IN ({', '.join('?' * len(chunk))})", chunk
        )
    report.deleted += len(gone)
    _write(lite, table, [remote[uid] for uid in changed], local, report, progress)
    return back, undeleted, same, lost


def _uid_first(pg: Any, table: Table) -> list[tuple[Any, ...]]:
    # Rows as (uid, version, every column...) so callers index them cheaply.
    uid_at, version_at = table.columns.index("uid"), table.columns.index("version")
    return [(row[uid_at], row[version_at], row) for row in pg.fetchall()]


def _write(
    lite: Any,
    table: Table,
    rows: list[tuple[Any, ...]],
    local: dict[str, int],
    report: MirrorReport,
    progress: Progress | None,
) -> None:
    connection = connections[SQLITE]
    columns = table.columns
    insert = f"INSERT INTO {table.name} ({table.quoted()}) VALUES ({', '.join('?' * len(columns))})"
    update = f"UPDATE {table.name} SET {', '.join(f'"{c}" = ?' for c in columns)} WHERE uid = ?"
    inserts, updates = [], []
    for _uid, _version, values in rows:
        prepared = table.prepare(table.from_db(values), connection)
        if values[columns.index("uid")].hex in local:
            updates.append([*prepared, prepared[columns.index("uid")]])
        else:
            inserts.append(prepared)
    done = 0
    for sql, batch in ((update, updates), (insert, inserts)):
        for chunk in _chunks(batch):
            done += _execute(lite, sql, chunk, report)
            if progress is not None:
                progress(done, len(rows))


def _execute(lite: Any, sql: str, rows: list[Any], report: MirrorReport) -> int:
    try:
        with transaction.atomic(using=SQLITE):
            lite.executemany(sql, rows)
        report.pulled += len(rows)
    except IntegrityError:
        # A local, journaled row holds the name: copy the others, skip this one.
        for row in rows:
            try:
                with transaction.atomic(using=SQLITE):
                    lite.execute(sql, row)
                report.pulled += 1
            except IntegrityError:
                report.skipped += 1
    return len(rows)


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def _account_tables() -> list[tuple[type[Model], str]]:
    return [
        (Group, "SELECT {cols} FROM auth_group"),
        (User, "SELECT {cols} FROM auth_user"),
        (User.groups.through, "SELECT {cols} FROM auth_user_groups"),
    ]


PERMISSION_LINKS = (
    ("auth_group_permissions", "group_id"),
    ("auth_user_user_permissions", "user_id"),
)


def mirror_accounts(pg: Any) -> int:
    """Copy users, groups, memberships and permissions; return rows changed."""
    lite = connections[SQLITE].cursor()
    sqlite = connections[SQLITE]
    wanted: list[tuple[str, list[str], dict[Any, tuple[Any, ...]]]] = []
    for model, query in _account_tables():
        fields = model._meta.concrete_fields
        cols = ", ".join(f'"{f.column}"' for f in fields)
        pg.execute(query.format(cols=cols))
        rows = {
            row[0]: tuple(f.get_db_prep_save(v, sqlite) for f, v in zip(fields, row, strict=True))
            for row in pg.fetchall()
        }
        wanted.append((model._meta.db_table, [str(f.column) for f in fields], rows))
    lite.execute(
        "SELECT ct.app_label, ct.model, p.codename, p.id FROM auth_permission p "
        "JOIN django_content_type ct ON ct.id = p.content_type_id"
    )
    local_permission = {tuple(row[:3]): row[3] for row in lite.fetchall()}
    for link, owner in PERMISSION_LINKS:
        pg.execute(
            f"SELECT l.id, l.{owner}, ct.app_label, ct.model, p.codename FROM {link} l "
            "JOIN auth_permission p ON p.id = l.permission_id "
            "JOIN django_content_type ct ON ct.id = p.content_type_id"
        )
        rows = {}
        for pk, owner_id, *natural in pg.fetchall():
            permission = local_permission.get(tuple(natural))
            if permission is not None:
                rows[pk] = (pk, owner_id, permission)
        wanted.append((link, ["id", owner, "permission_id"], rows))
    changed = 0
    # Children before parents when deleting, parents first when writing.
    for name, columns, rows in reversed(wanted):
        changed += _delete_missing(lite, name, columns, rows)
    for name, columns, rows in wanted:
        changed += _upsert(lite, name, columns, rows)
    return changed


def _delete_missing(lite: Any, name: str, columns: list[str], rows: dict[Any, Any]) -> int:
    lite.execute(f"SELECT id FROM {name}")
    gone = [pk for (pk,) in lite.fetchall() if pk not in rows]
    for chunk in _chunks(gone):
        marks = ", ".join("?" * len(chunk))
        if name == "auth_user":
            lite.execute(f"DELETE FROM django_admin_log WHERE user_id IN ({marks})", chunk)
        lite.execute(f"DELETE FROM {name} WHERE id IN ({marks})", chunk)
    return len(gone)


def _upsert(lite: Any, name: str, columns: list[str], rows: dict[Any, tuple[Any, ...]]) -> int:
    quoted = ", ".join(f'"{c}"' for c in columns)
    lite.execute(f"SELECT {quoted} FROM {name}")
    local = {row[0]: row for row in lite.fetchall()}
    stale = [row for pk, row in rows.items() if _differs(local.get(pk), row)]
    if not stale:
        return 0
    assignments = ", ".join(f'"{c}" = excluded."{c}"' for c in columns[1:])
    lite.executemany(
        f"INSERT INTO {name} ({quoted}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT (id) DO UPDATE SET {assignments}",
        stale,
    )
    return len(stale)


def _differs(local: tuple[Any, ...] | None, remote: tuple[Any, ...]) -> bool:
    if local is None:
        return True
    return any(_normal(a) != _normal(b) for a, b in zip(local, remote, strict=True))


def _normal(value: Any) -> Any:
    # SQLite hands timestamps back as datetimes but takes them as the text
    # Django writes; booleans as integers. Compare in the form written.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return str(value.replace(tzinfo=None))
    return value


def lag_seconds() -> float | None:
    """Return how long ago the last successful mirror run finished, if ever."""
    run = runs.last(runs.MIRROR)
    if run is None or run.last_success_at is None:
        return None
    return round((datetime.now(UTC) - run.last_success_at).total_seconds(), 3)
