"""The database status people see: /api/health, dbstatus, the banner."""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError

from kindler.db.health import Snapshot, State, monitor
from kindler.db.routing import postgres_configured


def database_report(snapshot: Snapshot | None = None) -> dict[str, Any]:
    """Return the database part of the health report as plain JSON data."""
    snapshot = snapshot or monitor.snapshot()
    probe = snapshot.probe
    return {
        "active": snapshot.active,
        "state": str(snapshot.state),
        "since": snapshot.since.isoformat(),
        "postgres": {
            "configured": snapshot.configured,
            "reachable": bool(probe and probe.reachable),
            "latency_ms": probe.latency_ms if probe else None,
            "error": probe.error if probe else None,
        },
        "sync": sync_report(snapshot) if snapshot.configured else None,
    }


def sync_report(snapshot: Snapshot) -> dict[str, Any]:
    """Return the journal, conflicts, last replay and mirror, as JSON data."""
    from kindler.db import journal, mirror, runs

    try:
        pending, oldest = journal.pending(), journal.oldest_pending()
    except DatabaseError:
        pending, oldest = None, None
    lag = mirror.lag_seconds()
    last_mirror = runs.describe(runs.last(runs.MIRROR))
    if last_mirror is not None:
        last_mirror["lag_seconds"] = lag
    return {
        "journal": {"pending": pending, "oldest": oldest},
        "open_conflicts": open_conflicts(snapshot),
        "last_replay": runs.describe(runs.last(runs.REPLAY)),
        "last_mirror": last_mirror,
        "mirror_lag_seconds": lag,
    }


def open_conflicts(snapshot: Snapshot) -> int | None:
    """Return the open conflicts, or None while PostgreSQL (which holds them) is away."""
    from kindler.db.conflicts import open_conflicts as count

    if snapshot.state is State.FALLBACK:
        return None
    try:
        return count()
    except DatabaseError:
        return None


def is_degraded(report: dict[str, Any]) -> bool:
    """Return True when PostgreSQL is configured but not serving."""
    return postgres_configured() and report["active"] != "postgres"
