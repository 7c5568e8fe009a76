"""Which PostgreSQL this SQLite file talks to, and whether it is still the same one.

A PostgreSQL database is named by three things together: the identity row
migrate writes (a UUID, carried along by a dump), the server's system
identifier (a new cluster gets a new one) and the database's OID (a dropped
and re-created database gets a new one, even when restored from a dump that
carries the old UUID). The change log's position sequence only grows, so
a position below the one last mirrored means a restore from an older dump.

The SQLite file remembers the identity and position it last mirrored
(KnownDatabase). When they differ, or nothing is remembered yet, the mirror
merges instead of copying: see kindler.db.sync.mirror.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError, connections

from kindler.db import POSTGRES, SQLITE
from kindler.db.models import KnownDatabase, RestoredWhy
from kindler.db.sync.journal import IDENTITY_TABLE, POSITION_SEQUENCE

# One query: pg_control_system() may be closed to a non-superuser, the
# system identifier then stays unknown and the UUID and OID decide.
IDENTITY_SQL = f"""
SELECT
  (SELECT uuid FROM {IDENTITY_TABLE} ORDER BY id LIMIT 1),
  CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')
       THEN (SELECT system_identifier FROM pg_control_system()) END,
  (SELECT oid FROM pg_database WHERE datname = current_database())::bigint,
  (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {POSITION_SEQUENCE})
"""


@dataclass(frozen=True)
class Identity:
    """A PostgreSQL database as seen now, with its change log's position."""

    database_uuid: uuid.UUID | None
    system_identifier: int | None
    database_oid: int | None
    position: int

    def same_database(self, known: KnownDatabase) -> bool:
        return (
            self.database_uuid == known.database_uuid
            and self.database_oid == known.database_oid
            and (
                self.system_identifier is None
                or known.system_identifier is None
                or self.system_identifier == known.system_identifier
            )
        )

    def __str__(self) -> str:
        return (
            f"database {self.database_uuid} (system {self.system_identifier}, "
            f"oid {self.database_oid}) at change {self.position}"
        )


def read(cursor: Any | None = None) -> Identity:
    """Return the identity of the PostgreSQL database Kindler is connected to."""
    if cursor is None:
        with connections[POSTGRES].cursor() as own:
            return read(own)
    cursor.execute(IDENTITY_SQL)
    database_uuid, system_identifier, oid, position = cursor.fetchone()
    if database_uuid is not None and not isinstance(database_uuid, uuid.UUID):
        database_uuid = uuid.UUID(str(database_uuid))
    return Identity(database_uuid, system_identifier, oid, int(position or 0))


def known() -> KnownDatabase | None:
    """Return what this SQLite file remembers of its PostgreSQL, if anything."""
    try:
        return KnownDatabase.objects.using(SQLITE).order_by("id").first()
    except DatabaseError:
        return None


def change(current: Identity, remembered: KnownDatabase | None) -> str | None:
    """Return why a merge is needed ("adopted", "restored"), or None when it is not.

    Adopted: nothing remembered yet (first contact, the move from embedded
    SQLite). Restored: another database, or the change log went back.
    """
    if remembered is None or remembered.database_uuid is None:
        return RestoredWhy.ADOPTED
    if not current.same_database(remembered) or current.position < remembered.position:
        return RestoredWhy.RESTORED
    return None


def remember(current: Identity, mark: int | None) -> None:
    """Store current as the database this file mirrors, with the mirror's mark."""
    fields: dict[str, Any] = {
        "database_uuid": current.database_uuid,
        "system_identifier": current.system_identifier,
        "database_oid": current.database_oid,
        "position": current.position,
        "seen_at": datetime.now(UTC),
    }
    if mark is not None:
        fields["mark"] = str(mark)
    updated = KnownDatabase.objects.using(SQLITE).filter(
        pk__in=KnownDatabase.objects.using(SQLITE).order_by("id").values("pk")[:1]
    )
    if not updated.update(**fields):
        KnownDatabase.objects.using(SQLITE).create(**fields)


def mark() -> int | None:
    """Return the mirror's high-water mark, or None when the next run must be full."""
    remembered = known()
    if remembered is None or not remembered.mark:
        return None
    return int(remembered.mark)
