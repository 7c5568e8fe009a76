"""Resolve a conflict: keep PostgreSQL's row, or apply the local change over it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from django.db import connections, transaction

from kindler.db import POSTGRES
from kindler.db.models import Conflict, ConflictKind, Resolution
from kindler.db.sync.locks import hold_global_lock
from kindler.db.sync.tables import Table, table_for


class ResolutionError(Exception):
    """The conflict cannot be resolved as asked (unknown, or already resolved)."""


def open_conflicts() -> int:
    """Return how many conflicts wait for a person to decide."""
    return Conflict.objects.using(POSTGRES).filter(resolved_at__isnull=True).count()


def open_conflict_list(limit: int = 100) -> list[Conflict]:
    """Return the open conflicts, oldest first (what `sync_db --resolve` takes)."""
    return list(Conflict.objects.using(POSTGRES).filter(resolved_at__isnull=True)[:limit])


def resolve(conflict_uid: str | uuid.UUID, keep: str) -> Conflict:
    """Resolve the conflict, keeping 'remote' (PostgreSQL's) or 'local'."""
    if keep not in Resolution.values:
        raise ResolutionError(f"--keep must be local or remote, not {keep!r}")
    try:
        key = uuid.UUID(str(conflict_uid))
    except ValueError:
        raise ResolutionError(f"{conflict_uid} is not a conflict id (a UUID)") from None
    with transaction.atomic(using=POSTGRES):
        cursor = connections[POSTGRES].cursor()
        hold_global_lock(cursor)
        conflict = Conflict.objects.using(POSTGRES).select_for_update().filter(uid=key).first()
        if conflict is None:
            raise ResolutionError(f"No conflict {key}.")
        if conflict.resolved_at is not None:
            raise ResolutionError(
                f"Conflict {key} was already resolved ({conflict.get_resolution_display()})."
            )
        if keep == Resolution.LOCAL:
            apply_local(conflict)
        conflict.resolution = keep
        conflict.resolved_at = datetime.now(UTC)
        conflict.save(using=POSTGRES, update_fields=["resolution", "resolved_at"])
    return conflict


def apply_local(conflict: Conflict) -> None:
    """Make PostgreSQL hold the conflict's local side (or delete the row)."""
    table = table_for(conflict.model)
    local = table.from_json(conflict.local)
    uid = uuid.UUID(conflict.row_uid)
    cursor = connections[POSTGRES].cursor()
    current = _version(cursor, table, uid)
    if local is None:
        cursor.execute(f"DELETE FROM {table.name} WHERE uid = %s", [uid])
        return
    if conflict.kind == ConflictKind.INSERT_INSERT and conflict.remote:
        # The other side's row holds the name: local replaces it. A row that
        # only holds a port local wants is another cluster and stays; the
        # write below then fails until someone frees the port.
        remote_uid = uuid.UUID(str(conflict.remote["uid"]))
        same_name = any(conflict.remote.get(n) == local.get(n) for n in table.unique_names)
        if remote_uid != uid and same_name:
            cursor.execute(f"DELETE FROM {table.name} WHERE uid = %s", [remote_uid])
    # A version above both sides, so every copy sees this as the newest.
    local["version"] = max(current or 0, local["version"] or 0, _remote_version(conflict)) + 1
    values = table.prepare(local, connections[POSTGRES])
    if current is None:
        cursor.execute(
            f"INSERT INTO {table.name} ({table.quoted()}) "
            f"VALUES ({', '.join(['%s'] * len(values))})",
            values,
        )
    else:
        assignments = ", ".join(f'"{c}" = %s' for c in table.columns)
        cursor.execute(f"UPDATE {table.name} SET {assignments} WHERE uid = %s", [*values, uid])


def _version(cursor: Any, table: Table, uid: uuid.UUID) -> int | None:
    cursor.execute(f"SELECT version FROM {table.name} WHERE uid = %s", [uid])
    row = cursor.fetchone()
    return int(row[0]) if row else None


def _remote_version(conflict: Conflict) -> int:
    return int((conflict.remote or {}).get("version") or 0)


def side_by_side(conflict: Conflict) -> list[tuple[str, Any, Any, Any]]:
    """Return (field, base, local, remote) for every field, for the admin."""
    sides = [conflict.base or {}, conflict.local or {}, conflict.remote or {}]
    names = [str(f.attname) for f in table_for(conflict.model).fields]
    return [(name, sides[0].get(name), sides[1].get(name), sides[2].get(name)) for name in names]
