"""Django's PostgreSQL backend, borrowing its connections from kindler.db.pool.

Without a pool configured (PG_POOL_MAX=0) it is Django's backend unchanged.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import IsolationLevel

from kindler.db.pool import ConnectionPool, close_everything_idle, pool_for


class DatabaseWrapper(base.DatabaseWrapper):
    def pooled(self) -> ConnectionPool | None:
        """Return this process's pool for the alias, or None when it has none."""
        if self.alias == NO_DB_ALIAS:
            # Django's own short connections to the maintenance database.
            return None
        return pool_for(self.alias, self.settings_dict)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        pool = self.pooled()
        if pool is None:
            return super().get_new_connection(conn_params)
        # Django sets this when it opens a connection; a reused one needs it too.
        self.isolation_level = IsolationLevel.READ_COMMITTED
        return pool.acquire(lambda: self._connect_new(conn_params))

    def _connect_new(self, conn_params: dict[str, Any]) -> Any:
        return super().get_new_connection(conn_params)  # type: ignore[misc]

    def _close(self) -> None:
        pool = self.pooled()
        if pool is None or self.connection is None:
            super()._close()  # type: ignore[misc]
            return
        # A connection that raised anything but a data or integrity error is
        # not trusted with another request; one closed inside an atomic block
        # stays referenced by this wrapper until the block ends, so it is
        # closed for good rather than handed to another thread.
        reusable = not self.errors_occurred and not self.in_atomic_block
        pool.release(self.connection, reusable=reusable)

    def close_pool(self) -> None:
        """Close what this process keeps open to the database (before it is dropped or copied)."""
        super().close_pool()
        close_everything_idle()
