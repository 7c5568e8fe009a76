from __future__ import annotations

from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest

from kindler.db.routing import postgres_configured


def database(request: HttpRequest) -> dict[str, Any]:
    """Expose the database state, pending changes and open conflicts to the banner."""
    if not postgres_configured():
        return {"database_status": None}
    from kindler.db import journal, runs
    from kindler.db.health import monitor
    from kindler.db.status import open_conflicts

    snapshot = monitor.snapshot()
    try:
        pending = journal.pending()
    except DatabaseError:
        pending = None
    replay = runs.last(runs.REPLAY)
    return {
        "database_status": snapshot,
        "pending_changes": pending,
        "open_conflicts": open_conflicts(snapshot),
        "replay_failure": replay.result if replay is not None and not replay.ok else None,
    }
