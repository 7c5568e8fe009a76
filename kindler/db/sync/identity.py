"""Which PostgreSQL this SQLite file talks to, and whether it is still the same one.

A PostgreSQL database is named by three things together: the identity row
migrate writes (a UUID, carried along by a dump), the server's system
identifier (a new cluster gets a new one) and the database's OID (a dropped
and re-created database gets a new one, even when restored from a dump that
carries the old UUID). The change log's position sequence only grows, so
a position below the one last mirrored means a restore from an older dump.
The server's WAL timeline grows by one when a standby is promoted: the same
database on a new timeline is a failover, which with asynchronous
replication may have lost the last commits the old primary acknowledged.
Another node answering (behind HAProxy, a server started from an older
base backup) is one too. And the server's start time: restoring an older
physical copy in place keeps the node, the timeline and (the sequence is
logged ahead of its use) often a position ahead of the one last mirrored,
but it needs a restart. So a server that started again since this file
last checked it is merged as after a restore: a restart that lost
nothing costs one full comparison, a lost commit is never left behind.

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
from django.dispatch import Signal

from kindler.db import POSTGRES, SQLITE
from kindler.db.models import KnownDatabase, RestoredWhy
from kindler.db.sync.journal import IDENTITY_TABLE, POSITION_SEQUENCE

# Sent when PostgreSQL answers from another node or timeline than the one this
# file last mirrored (a failover, behind HAProxy or not), with change=NodeChange.
primary_changed = Signal()

# One query: pg_control_system() may be closed to a non-superuser, the
# system identifier then stays unknown and the UUID and OID decide.
IDENTITY_SQL = f"""
SELECT
  (SELECT uuid FROM {IDENTITY_TABLE} ORDER BY id LIMIT 1),
  CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')
       THEN (SELECT system_identifier FROM pg_control_system()) END,
  (SELECT oid FROM pg_database WHERE datname = current_database())::bigint,
  (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {POSITION_SEQUENCE}),
  CASE WHEN NOT pg_is_in_recovery()
       THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,
  coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'local socket'),
  pg_postmaster_start_time()
"""


@dataclass(frozen=True)
class Identity:
    """A PostgreSQL database as seen now, with its change log's position."""

    database_uuid: uuid.UUID | None
    system_identifier: int | None
    database_oid: int | None
    position: int
    timeline: int | None = None
    # The node that answered (inet_server_addr():port): behind a proxy, the primary itself.
    server: str = ""
    # When the server started: a restore in place, or a crash, restarts it.
    started_at: datetime | None = None

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

    def new_timeline(self, known: KnownDatabase) -> bool:
        """Return True when the server moved to another timeline since known (a failover)."""
        return (
            self.timeline is not None
            and known.timeline is not None
            and self.timeline != known.timeline
        )

    def other_node(self, known: KnownDatabase) -> bool:
        """Return True when another server answers than the one known (a change of primary)."""
        return bool(self.server and known.server and self.server != known.server)

    def restarted(self, known: KnownDatabase) -> bool:
        """Return True when the server started again since known was seen."""
        return (
            self.started_at is not None
            and known.started_at is not None
            and self.started_at != known.started_at
        )

    def __str__(self) -> str:
        return (
            f"database {self.database_uuid} (system {self.system_identifier}, "
            f"oid {self.database_oid}) at change {self.position}"
        )

    def node(self) -> str:
        """Return the node and timeline, as health and the switch history name the primary."""
        return f"{self.server} (system {self.system_identifier}, timeline {self.timeline})"


def read(cursor: Any | None = None) -> Identity:
    """Return the identity of the PostgreSQL database Kindler is connected to."""
    if cursor is None:
        with connections[POSTGRES].cursor() as own:
            return read(own)
    cursor.execute(IDENTITY_SQL)
    database_uuid, system_identifier, oid, position, timeline, server, started = cursor.fetchone()
    if database_uuid is not None and not isinstance(database_uuid, uuid.UUID):
        database_uuid = uuid.UUID(str(database_uuid))
    return Identity(
        database_uuid, system_identifier, oid, int(position or 0), timeline, str(server), started
    )


def known() -> KnownDatabase | None:
    """Return what this SQLite file remembers of its PostgreSQL, if anything."""
    try:
        return KnownDatabase.objects.using(SQLITE).order_by("id").first()
    except DatabaseError:
        return None


def change(current: Identity, remembered: KnownDatabase | None) -> str | None:
    """Return why a merge is needed ("adopted", "restored", "failover"), or None when it is not.

    Adopted: nothing remembered yet (first contact, the move from embedded
    SQLite). Restored: another database, the change log went back, or the
    server restarted (a copy restored in place). Failover: the same database
    on a new timeline (a promoted standby) or on another node.
    """
    if remembered is None or remembered.database_uuid is None:
        return RestoredWhy.ADOPTED
    if not current.same_database(remembered):
        return RestoredWhy.RESTORED
    if current.new_timeline(remembered) or current.other_node(remembered):
        return RestoredWhy.FAILOVER
    if current.position < remembered.position or current.restarted(remembered):
        return RestoredWhy.RESTORED
    return None


def described(current: Identity, remembered: KnownDatabase | None) -> str:
    """Return what changed between remembered and current, for the switch history."""
    if remembered is None:
        return f"first contact with {current.node()}"
    before = f"{_node(remembered)} at change {remembered.position}"
    now = f"{current.node()} at change {current.position}"
    if current.restarted(remembered) and current.started_at is not None:
        now += f", restarted at {current.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return f"primary was {before}, now {now}"


@dataclass(frozen=True)
class Node:
    """The PostgreSQL node Kindler writes to, as this file last saw it."""

    server: str
    system_identifier: int | None
    timeline: int | None
    position: int
    seen_at: datetime | None
    # Patroni's name for it, when its REST API is configured (kindler.db.sync.patroni).
    member: str | None = None

    def __str__(self) -> str:
        node = self.server or "unknown node"
        named = f"member {self.member}, " if self.member else ""
        return f"{node} ({named}system {self.system_identifier}, timeline {self.timeline})"

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server or None,
            "member": self.member,
            "system_identifier": (
                None if self.system_identifier is None else str(self.system_identifier)
            ),
            "timeline": self.timeline,
            "position": self.position,
            "seen_at": self.seen_at.isoformat() if self.seen_at else None,
        }


@dataclass(frozen=True)
class NodeChange:
    """PostgreSQL answered from another node or timeline (a change of primary)."""

    at: datetime
    source: Node
    target: Node

    @property
    def cause(self) -> str:
        return f"PostgreSQL's primary changed from {self.source} to {self.target}"


def primary_node() -> Node | None:
    """Return the node this file last mirrored from, or None before the first mirror."""
    remembered = known()
    if remembered is None or remembered.database_uuid is None:
        return None
    return _node(remembered)


def _node(remembered: KnownDatabase) -> Node:
    return Node(
        remembered.server,
        remembered.system_identifier,
        remembered.timeline,
        remembered.position,
        remembered.seen_at,
    )


def remember(current: Identity, mark: int | None) -> None:
    """Store current as the database this file mirrors, with the mirror's mark.

    A node or timeline other than the one remembered is announced
    (primary_changed): the switch history records it.
    """
    remembered = known()
    _remember(current, mark)
    if remembered is None or remembered.database_uuid is None or not remembered.server:
        return
    if (remembered.server, remembered.timeline, remembered.system_identifier) != (
        current.server,
        current.timeline,
        current.system_identifier,
    ):
        after = known()
        if after is not None:
            change = NodeChange(datetime.now(UTC), _node(remembered), _node(after))
            primary_changed.send_robust(sender=Node, change=change)


def _remember(current: Identity, mark: int | None) -> None:
    fields: dict[str, Any] = {
        "database_uuid": current.database_uuid,
        "system_identifier": current.system_identifier,
        "database_oid": current.database_oid,
        "position": current.position,
        "timeline": current.timeline,
        "server": current.server[:100],
        "started_at": current.started_at,
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
