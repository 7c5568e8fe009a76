"""The database status of this instance: read once, shown everywhere.

database_status() makes every read (the failover state, the journal, the
conflicts, the last replay and mirror runs, the switch history) and returns
one DatabaseStatus. The banner, /api/health, /api/metrics, `dbstatus` and the
System page all render that one value instead of reading on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError

from kindler.db import POSTGRES, SQLITE, telemetry
from kindler.db.failover.monitor import Probe, Snapshot, monitor
from kindler.db.failover.pinning import sqlite_fallback_enabled
from kindler.db.models import SyncRun
from kindler.db.sync import conflicts, journal, runs


@dataclass(frozen=True)
class SyncStatus:
    """What waits to be carried between the databases, and how the last runs went."""

    # None when the SQLite journal could not be read.
    pending: int | None
    oldest_pending: str | None
    # None while PostgreSQL, which holds the conflicts, is not the active database.
    open_conflicts: int | None
    last_replay: SyncRun | None
    last_mirror: SyncRun | None
    mirror_lag_seconds: float | None
    # Replay and mirror runs, newest first: what each pushed, pulled, deleted
    # and restored, not only the last of each kind.
    recent_runs: tuple[SyncRun, ...] = ()

    @property
    def replay_failure(self) -> str | None:
        """Return why the last replay stopped, if it did."""
        run = self.last_replay
        return run.result if run is not None and not run.ok else None

    def as_json(self) -> dict[str, Any]:
        """Return the sync figures as JSON data (database.sync in /api/health)."""
        last_mirror = runs.as_json(self.last_mirror)
        if last_mirror is not None:
            last_mirror["lag_seconds"] = self.mirror_lag_seconds
        return {
            "journal": {"pending": self.pending, "oldest": self.oldest_pending},
            "open_conflicts": self.open_conflicts,
            "last_replay": runs.as_json(self.last_replay),
            "last_mirror": last_mirror,
            "mirror_lag_seconds": self.mirror_lag_seconds,
        }


RECENT_RUNS = 10


@dataclass(frozen=True)
class DatabaseStatus:
    """The instance's database state, with the sync figures and switch history."""

    failover: Snapshot
    # None when PostgreSQL is not configured, or in PostgreSQL-only mode:
    # there is nothing to carry.
    sync: SyncStatus | None
    switches: list[dict[str, Any]]
    # "sqlite", or "off" in PostgreSQL-only mode (KINDLER_FALLBACK).
    fallback: str = "sqlite"

    @property
    def active(self) -> str | None:
        """Return the alias queries go to now (None when no database can be used)."""
        return self.failover.active

    @property
    def probe(self) -> Probe | None:
        """Return what the last probe of PostgreSQL found, if it was probed."""
        return self.failover.probe

    @property
    def degraded(self) -> bool:
        """Return True when PostgreSQL is configured but SQLite serves in its place."""
        return self.failover.configured and self.failover.active == SQLITE

    @property
    def unavailable(self) -> bool:
        """Return True when no database can be used (PostgreSQL-only mode, PostgreSQL down)."""
        return self.failover.configured and self.failover.active is None

    @property
    def health(self) -> str:
        """Return healthy, degraded (on SQLite) or unhealthy (nothing to serve from)."""
        if self.unavailable:
            return "unhealthy"
        return "degraded" if self.degraded else "healthy"

    @property
    def host(self) -> str | None:
        """Return the listed PostgreSQL server that takes writes, as the last probe found."""
        probe = self.failover.probe
        return probe.host if probe is not None else None

    def as_json(self) -> dict[str, Any]:
        """Return the status as JSON data, in the shape /api/health has always had."""
        snapshot, probe = self.failover, self.failover.probe
        return {
            "active": snapshot.active,
            "state": str(snapshot.state),
            "state_cause": snapshot.cause,
            "since": snapshot.since.isoformat(),
            "fallback": self.fallback,
            "postgres": {
                "configured": snapshot.configured,
                "reachable": bool(probe and probe.reachable),
                "usable": bool(probe and probe.usable),
                "latency_ms": probe.latency_ms if probe else None,
                "error": probe.error if probe else None,
                "host": self.host,
                "hosts": self.hosts_as_json(),
            },
            "sync": self.sync.as_json() if self.sync is not None else None,
        }

    def hosts_as_json(self) -> list[dict[str, Any]]:
        """Return each listed PostgreSQL server with its role, as the last probe found them."""
        probe = self.failover.probe
        if probe is None:
            return []
        return [
            {
                "address": host.address,
                "role": str(host.role),
                "active": host.address == probe.host,
                "latency_ms": host.latency_ms,
                "error": host.error,
            }
            for host in probe.hosts
        ]

    def switches_as_json(self) -> list[dict[str, Any]]:
        """Return the switch history as JSON data, newest first."""
        return [{**entry, "at": entry["at"].isoformat()} for entry in self.switches]


def database_status(snapshot: Snapshot | None = None) -> DatabaseStatus:
    """Read the database status of this instance (from snapshot when given one)."""
    snapshot = snapshot or monitor.snapshot()
    with_sqlite = sqlite_fallback_enabled()
    return DatabaseStatus(
        failover=snapshot,
        # PostgreSQL-only mode never opens the SQLite file, not even to read its journal.
        sync=sync_status(snapshot) if snapshot.configured and with_sqlite else None,
        switches=telemetry.switch_history(),
        fallback="sqlite" if with_sqlite else "off",
    )


def sync_status(snapshot: Snapshot) -> SyncStatus:
    """Read the journal, the open conflicts and the last replay and mirror runs."""
    try:
        pending, oldest = journal.pending(), journal.oldest_pending()
    except DatabaseError:
        pending, oldest = None, None
    last_mirror = runs.last(runs.MIRROR)
    return SyncStatus(
        pending=pending,
        oldest_pending=oldest,
        open_conflicts=_open_conflicts(snapshot),
        last_replay=runs.last(runs.REPLAY),
        last_mirror=last_mirror,
        mirror_lag_seconds=_lag_seconds(last_mirror),
        recent_runs=tuple(runs.history(RECENT_RUNS)),
    )


def _open_conflicts(snapshot: Snapshot) -> int | None:
    if not snapshot.configured or snapshot.active != POSTGRES:
        return None
    try:
        return conflicts.open_conflicts()
    except DatabaseError:
        return None


def _lag_seconds(run: SyncRun | None) -> float | None:
    if run is None or run.last_success_at is None:
        return None
    return round((datetime.now(UTC) - run.last_success_at).total_seconds(), 3)
