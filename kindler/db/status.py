"""The database status people see: /api/health, dbstatus, the banner."""

from __future__ import annotations

from typing import Any

from kindler.db.health import Snapshot, monitor
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
    }


def is_degraded(report: dict[str, Any]) -> bool:
    """Return True when PostgreSQL is configured but not serving."""
    return postgres_configured() and report["active"] != "postgres"
