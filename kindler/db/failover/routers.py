"""The database router: every model goes to the alias that is healthy now."""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from kindler.db import ALIASES
from kindler.db.failover.errors import PostgreSQLUnavailable
from kindler.db.failover.monitor import monitor
from kindler.db.failover.pinning import pinned


def current_alias() -> str:
    """Return the alias pinned for the code running now, else the instance's active one.

    Raises PostgreSQLUnavailable in PostgreSQL-only mode while no PostgreSQL
    takes writes: there is no other database to read stale rows from.
    """
    alias = pinned()
    if alias is not None:
        return alias
    why = monitor.unavailable()
    if why is not None:
        raise PostgreSQLUnavailable(why)
    return monitor.active_alias()


class FailoverRouter:
    """Route reads and writes to PostgreSQL, or to SQLite while it is away."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        return self._alias_for(hints)

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return self._alias_for(hints)

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        return obj1._state.db == obj2._state.db

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db in ALIASES

    @staticmethod
    def _alias_for(hints: dict[str, Any]) -> str:
        # An object stays with the database it was loaded from: saving a row
        # read from PostgreSQL into SQLite (or back) would fork its history.
        instance = hints.get("instance")
        if instance is not None and instance._state.db in ALIASES:
            return str(instance._state.db)
        return current_alias()
