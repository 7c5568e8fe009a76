"""The database status every page's banner shows (templates/includes/database_banner.html)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from kindler.db.status import database_status


def database(request: HttpRequest) -> dict[str, Any]:
    """Expose the database status to the fallback banner, read only if a template shows it."""
    return {"database_status": SimpleLazyObject(database_status)}
