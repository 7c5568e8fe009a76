"""Which alias the code running now should use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from django.conf import settings

from kindler.db import POSTGRES, SQLITE

if TYPE_CHECKING:
    from kindler.db.health import HealthMonitor

_pinned: ContextVar[str | None] = ContextVar("kindler_pinned_alias", default=None)


def postgres_configured() -> bool:
    """Return True when a PostgreSQL alias is configured (PG_HOST is set)."""
    return POSTGRES in settings.DATABASES


def current_alias() -> str:
    """Return the alias pinned for this request, else the healthy one now."""
    pinned = _pinned.get()
    if pinned is not None:
        return pinned
    if not postgres_configured():
        return SQLITE
    return _monitor().active_alias()


def _monitor() -> HealthMonitor:
    # Imported on first use: health imports this module.
    global _health_monitor
    if _health_monitor is None:
        from kindler.db.health import monitor

        _health_monitor = monitor
    return _health_monitor


_health_monitor: HealthMonitor | None = None


@contextmanager
def pinned_alias(alias: str) -> Iterator[str]:
    """Route everything inside the block to alias, whatever the monitor says."""
    token = _pinned.set(alias)
    try:
        yield alias
    finally:
        _pinned.reset(token)
