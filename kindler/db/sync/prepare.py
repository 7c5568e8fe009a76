"""Bring the instance's own SQLite file up to this code's migrations before it serves.

The SQLite file is private to the instance (its fallback, its journal, its
copy of what it acknowledged), so the instance migrates it itself: the web
server's workers, the reconciler and every command call prepare_sqlite()
before their first query. Otherwise a new instance on a fresh file would
answer every request it routes to SQLite with "no such table", and its
recovery would fail forever on the journal table it lacks.

Several processes of one instance start at once (the server's workers, the
reconciler): an flock on a file beside the database lets one migrate while
the others wait, then find nothing left to do. PostgreSQL is never migrated
here: it is shared, and `manage.py migrate` is a person's decision.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator

from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connections

from kindler.db import SQLITE
from kindler.db.failover.monitor import expected_migrations
from kindler.db.failover.pinning import postgres_only

logger = logging.getLogger("kindler.db")


def lock_path() -> str:
    return f"{settings.DATABASES[SQLITE]['NAME']}.migrate.lock"


def missing_migrations() -> list[tuple[str, str]]:
    """Return the newest migrations of this code that the SQLite file has not applied."""
    wanted = expected_migrations()
    connection = connections[SQLITE]
    try:
        with connection.cursor() as cursor:
            if "django_migrations" not in connection.introspection.table_names(cursor):
                return sorted(wanted)
            cursor.execute("SELECT app, name FROM django_migrations")
            applied = {(app, name) for app, name in cursor.fetchall()}
    finally:
        # A process forked later (the server's workers) must not inherit it.
        connection.close()
    return sorted(wanted - applied)


@contextlib.contextmanager
def migrating_alone() -> Iterator[None]:
    """Hold the instance's migrate lock: one process of the instance migrates at a time."""
    fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def prepare_sqlite() -> bool:
    """Migrate the instance's SQLite file if it lacks any of this code's migrations.

    Return whether it migrated. In PostgreSQL-only mode (KINDLER_FALLBACK=off)
    nothing is served from SQLite, and the file is left as it is.
    """
    if postgres_only():
        return False
    try:
        if not missing_migrations():
            return False
    except DatabaseError:
        pass  # a file that cannot be read now is looked at again under the lock
    with migrating_alone():
        missing = missing_migrations()
        if not missing:
            return False
        logger.warning(
            "Migrating this instance's SQLite file %s up to %s",
            settings.DATABASES[SQLITE]["NAME"],
            ", ".join(f"{app}.{name}" for app, name in missing),
        )
        call_command("migrate", database=SQLITE, interactive=False, verbosity=0)
        connections[SQLITE].close()
    return True
