from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from kindler.db.routing import postgres_configured


def database(request: HttpRequest) -> dict[str, Any]:
    """Expose the database state to templates, for the fallback banner."""
    if not postgres_configured():
        return {"database_status": None}
    from kindler.db.health import monitor

    return {"database_status": monitor.snapshot()}
