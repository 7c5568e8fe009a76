"""Django's SQLite backend: a connection that could not write the file is not kept.

SQLite opens the file read-only when it cannot open it for writing (a
read-only file, folder or filesystem, chattr +i) and the connection stays
read-only for its life: once the file is writable again it still answers
"attempt to write a readonly database". After such an error the connection
is unusable, so Django closes it where it closes broken ones (the end of a
request, close_old_connections) and the next query opens the file afresh.
"""

from __future__ import annotations

from types import TracebackType

from django.db.backends.sqlite3 import base, operations
from django.db.utils import DatabaseErrorWrapper
from django.utils.functional import cached_property

from kindler.db.failover.errors import sqlite_cannot_write


class ReadOnlyNoticingWrapper(DatabaseErrorWrapper):
    """Django's error wrapper, noting on the connection an error that says it cannot write."""

    wrapper: DatabaseWrapper

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_value is not None and sqlite_cannot_write(exc_value):
            self.wrapper.cannot_write = True
        super().__exit__(exc_type, exc_value, traceback)


class DatabaseOperations(operations.DatabaseOperations):
    compiler_module = "kindler.db.backends.sqlite3.compiler"


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    # Set by an error saying this connection cannot write the file; a new connection clears it.
    cannot_write = False

    def connect(self) -> None:
        self.cannot_write = False
        super().connect()

    def is_usable(self) -> bool:
        return not self.cannot_write

    def close_if_unusable_or_obsolete(self) -> None:
        # Django asks is_usable() only about errors since the last commit or
        # rollback, and the atomic block that met the error has rolled back.
        if self.connection is not None and self.cannot_write and not self.in_atomic_block:
            self.close()
            return
        super().close_if_unusable_or_obsolete()

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:
        return ReadOnlyNoticingWrapper(self)
