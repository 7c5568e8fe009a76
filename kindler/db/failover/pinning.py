"""Pin the code running now to one alias, whatever the instance state says meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings

from kindler.db import POSTGRES

_pinned: ContextVar[str | None] = ContextVar("kindler_pinned_alias", default=None)


def postgres_configured() -> bool:
    """Return True when a PostgreSQL alias is configured (PG_HOST is set)."""
    return POSTGRES in settings.DATABASES


def sqlite_fallback_enabled() -> bool:
    """Return True when SQLite stands in for PostgreSQL in an outage (KINDLER_FALLBACK=sqlite).

    False in PostgreSQL-only mode (KINDLER_FALLBACK=off): then nothing is
    written to SQLite, and the journal, the mirror and the write-through are off.
    """
    return str(getattr(settings, "KINDLER_FALLBACK", "sqlite")) != "off"


def postgres_only() -> bool:
    """Return True when PostgreSQL is configured and the SQLite fallback is off."""
    return postgres_configured() and not sqlite_fallback_enabled()


def pinned() -> str | None:
    """Return the alias pinned for the code running now, if any."""
    return _pinned.get()


@contextmanager
def pinned_alias(alias: str) -> Iterator[str]:
    """Route everything inside the block to alias, whatever the monitor says."""
    token = _pinned.set(alias)
    try:
        yield alias
    finally:
        _pinned.reset(token)
