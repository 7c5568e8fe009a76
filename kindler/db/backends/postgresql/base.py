"""Django's PostgreSQL backend: pooled connections; BEGIN and SAVEPOINT go with the next statement.

Without a pool configured (PG_POOL_MAX=0) connections are Django's own.

psycopg2 sends BEGIN, and Django each SAVEPOINT, as a statement of its own:
a round trip to the server that answers nothing. Here the driver stays in
autocommit and those statements wait for the next one, which carries them
in the same message ("BEGIN; SAVEPOINT s1; INSERT ..."); PostgreSQL runs
them in order, as if sent apart. A savepoint released or rolled back before
any statement followed it is never sent at all, and a transaction that
sends nothing costs no BEGIN and no COMMIT. A create on PostgreSQL went from
six round trips to four, an update from five to three.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base, operations
from django.db.backends.postgresql.psycopg_any import IsolationLevel
from django.db.backends.utils import debug_transaction
from psycopg2 import extensions

from kindler.db.pool import ConnectionPool, close_everything_idle, pool_for

IDLE = extensions.TRANSACTION_STATUS_IDLE


class DeferringCursor(extensions.cursor):
    """A cursor that sends its connection's unsent BEGIN and SAVEPOINTs ahead of its statement."""

    owner: DatabaseWrapper | None = None

    def execute(self, query: Any, vars: Any = None) -> Any:
        owner = self.owner
        unsent = owner.unsent_statements() if owner is not None else []
        if not unsent:
            return super().execute(query, vars)
        assert owner is not None
        # Formatted first: a value the driver cannot adapt fails here, with nothing sent.
        statement = self.mogrify(query, vars)
        savepoints, owner.unsent_savepoints = owner.unsent_savepoints, []
        try:
            return super().execute(";".join([*unsent, ""]).encode() + statement)
        except Exception:
            if owner.connection is not None and owner.connection.info.transaction_status == IDLE:
                # Refused whole (a syntax error is found before anything runs):
                # the transaction has not begun, nor its savepoints been set.
                owner.unsent_savepoints = savepoints + owner.unsent_savepoints
            raise

    def executemany(self, query: Any, vars_list: Any) -> Any:
        # Sent on their own: executemany runs its statement once per row.
        self.send_unsent()
        return super().executemany(query, vars_list)

    def copy_expert(self, *args: Any, **kwargs: Any) -> Any:
        self.send_unsent()
        return super().copy_expert(*args, **kwargs)

    def copy_from(self, *args: Any, **kwargs: Any) -> Any:
        self.send_unsent()
        return super().copy_from(*args, **kwargs)

    def copy_to(self, *args: Any, **kwargs: Any) -> Any:
        self.send_unsent()
        return super().copy_to(*args, **kwargs)

    def callproc(self, *args: Any, **kwargs: Any) -> Any:
        self.send_unsent()
        return super().callproc(*args, **kwargs)

    def send_unsent(self) -> None:
        """Send the unsent BEGIN and SAVEPOINTs now, by themselves."""
        owner = self.owner
        unsent = owner.unsent_statements() if owner is not None else []
        if unsent:
            assert owner is not None
            super().execute(";".join(unsent))
            owner.unsent_savepoints = []


class DatabaseOperations(operations.DatabaseOperations):
    compiler_module = "kindler.db.backends.postgresql.compiler"


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Django has turned autocommit off: the next statement begins the transaction.
        self.transaction_wanted = False
        # SAVEPOINT statements no statement has carried to the server yet.
        self.unsent_savepoints: list[str] = []

    def unsent_statements(self) -> list[str]:
        """Return the BEGIN and SAVEPOINT statements the next statement must carry."""
        if not self.transaction_wanted:
            return []
        if self.connection.info.transaction_status == IDLE:
            return ["BEGIN", *self.unsent_savepoints]
        return self.unsent_savepoints

    def pooled(self) -> ConnectionPool | None:
        """Return this process's pool for the alias, or None when it has none."""
        if self.alias == NO_DB_ALIAS:
            # Django's own short connections to the maintenance database.
            return None
        return pool_for(self.alias, self.settings_dict)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        pool = self.pooled()
        if pool is None:
            return self._connect_new(conn_params)
        # Django sets this when it opens a connection; a reused one needs it too.
        self.isolation_level = IsolationLevel.READ_COMMITTED
        return pool.acquire(lambda: self._connect_new(conn_params))

    def _connect_new(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)  # type: ignore[misc]
        connection.cursor_factory = DeferringCursor
        return connection

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = super().create_cursor(name)
        if isinstance(cursor, DeferringCursor):
            cursor.owner = self
        return cursor

    def _set_autocommit(self, autocommit: bool) -> None:
        # The driver stays in autocommit; BEGIN goes out with the next statement.
        self.transaction_wanted = not autocommit
        self.unsent_savepoints = []
        if not self.connection.autocommit:
            with self.wrap_database_errors:
                self.connection.autocommit = True

    def _start_transaction_under_autocommit(self) -> None:
        """Begin a transaction with the next statement (transaction.atomic's entry)."""
        self._set_autocommit(False)

    def _commit(self) -> None:
        # Imported here: loading it with the backend, while a web server
        # worker starts, made a SIGTERM at that moment wait out the graceful
        # timeout in about 1 of 3 tries (tests/test_webserver.py).
        from kindler.db.failover import timeouts

        self.unsent_savepoints = []
        if self.connection is not None and self.connection.info.transaction_status != IDLE:
            with (
                debug_transaction(self, "COMMIT"),
                self.wrap_database_errors,
                timeouts.commit_in_time(),
                self.connection.cursor() as cursor,
            ):
                cursor.execute("COMMIT")

    def _rollback(self) -> None:
        self.unsent_savepoints = []
        if self.connection is not None and self.connection.info.transaction_status != IDLE:
            with (
                debug_transaction(self, "ROLLBACK"),
                self.wrap_database_errors,
                self.connection.cursor() as cursor,
            ):
                cursor.execute("ROLLBACK")

    def _savepoint(self, sid: str) -> None:
        self.unsent_savepoints.append(self.ops.savepoint_create_sql(sid))

    def _savepoint_rollback(self, sid: str) -> None:
        # Nothing ran since an unsent savepoint: nothing to undo. It stays
        # set (ROLLBACK TO keeps it); the ones set after it go.
        if not self._forget_unsent(sid, keep=True):
            super()._savepoint_rollback(sid)  # type: ignore[misc]

    def _savepoint_commit(self, sid: str) -> None:
        if not self._forget_unsent(sid, keep=False):
            super()._savepoint_commit(sid)  # type: ignore[misc]

    def _forget_unsent(self, sid: str, keep: bool) -> bool:
        """Drop the savepoints set after sid (and sid unless keep) if sid was not sent yet.

        Return whether it was unsent: then there is nothing to send.
        """
        created = self.ops.savepoint_create_sql(sid)
        if created not in self.unsent_savepoints:
            return False
        del self.unsent_savepoints[self.unsent_savepoints.index(created) + keep :]
        return True

    def _close(self) -> None:
        self.transaction_wanted = False
        self.unsent_savepoints = []
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
