"""Which schema a database holds, beyond migration names.

Instances of two releases share one PostgreSQL during a rolling upgrade. A
migration name says little: a placeholder migration and the real one that
later replaced it share a name. So `migrate` records in the database, for
every migration it holds, a fingerprint of the migration's operations and
the version of the code that recorded it (table kindler_schema, beside
django_migrations; post_migrate keeps it). An instance that finds a
migration it does not know, or another fingerprint under a name it knows,
is older than the database: it cannot tell which of its writes would be
right, so it takes none there (the probe calls PostgreSQL unusable with an
"upgrade required" error), refuses writes with a 503 that says to upgrade,
and leaves its journal for an upgraded instance to replay.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.db import connections
from django.db.migrations import Migration
from django.db.migrations.loader import MigrationLoader
from django.utils.functional import Promise

from kindler import __version__

TABLE = "kindler_schema"
UPGRADE_REQUIRED = "upgrade required"
OLDER = "This instance is older than the database; upgrade it."
CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "app varchar(100) NOT NULL, name varchar(255) NOT NULL, "
    "fingerprint varchar(64) NOT NULL, version varchar(32) NOT NULL, "
    "recorded_at varchar(40) NOT NULL, PRIMARY KEY (app, name))"
)
UPSERT = (
    f"INSERT INTO {TABLE} (app, name, fingerprint, version, recorded_at) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (app, name) DO "
)


def canonical(value: Any) -> Any:
    """Return value as plain JSON data that names functions and classes by their paths."""
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return f"{value.__module__}.{value.__qualname__}"
    if hasattr(value, "deconstruct") and callable(value.deconstruct):
        parts = value.deconstruct()
        # A field's deconstruct() starts with its name, which the operation holds.
        path, args, kwargs = parts[-3:]
        return [canonical(path), canonical(list(args)), canonical(kwargs)]
    if isinstance(value, dict):
        return {str(key): canonical(item) for key, item in sorted(value.items(), key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(item) for item in value), key=repr)
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, Promise):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def fingerprint(migration: Migration) -> str:
    """Return the sha256 of the migration's operations, as this code declares them."""
    text = json.dumps(canonical(list(migration.operations)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@cache
def known() -> dict[tuple[str, str], str]:
    """Return every migration this code has, with its fingerprint."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return {key: fingerprint(migration) for key, migration in loader.disk_migrations.items()}


def version_key(version: str) -> tuple[int, ...]:
    """Return a version string as numbers to compare ("0.10.0" after "0.9.1")."""
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


@dataclass(frozen=True)
class SchemaCheck:
    """What one look at a database's kindler_schema found."""

    # The newest code version that recorded a migration there; None before any did.
    database: str | None
    unknown: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def code(self) -> str:
        return __version__

    @property
    def newer(self) -> bool:
        """Return True when the database holds a schema this code does not know."""
        return bool(self.unknown or self.changed)

    def problem(self) -> str | None:
        """Return the probe's error for a database newer than this code, else None."""
        if not self.newer:
            return None
        what = [f"{', '.join(self.unknown)} unknown here"] if self.unknown else []
        what += [f"{', '.join(self.changed)} written differently here"] if self.changed else []
        return (
            f"{UPGRADE_REQUIRED}: the database holds schema {self.database}, this instance "
            f"is {self.code} ({'; '.join(what)})"
        )


def compare(rows: Iterable[tuple[str, str, str, str]]) -> SchemaCheck:
    """Compare the recorded (app, name, fingerprint, version) rows with this code's migrations."""
    mine = known()
    unknown, changed, versions = [], [], []
    for app, name, recorded, version in rows:
        versions.append(version)
        if (app, name) not in mine:
            unknown.append(f"{app}.{name}")
        elif mine[app, name] != recorded:
            changed.append(f"{app}.{name}")
    database = max(versions, key=version_key) if versions else None
    return SchemaCheck(database, tuple(sorted(unknown)), tuple(sorted(changed)))


def read(cursor: Any) -> SchemaCheck:
    """Read what the database behind cursor records; an empty check when it records nothing."""
    cursor.execute(f"SELECT app, name, fingerprint, version FROM {TABLE}")
    return compare(cursor.fetchall())


def recorded_version(using: str) -> str | None:
    """Return the schema version the database behind using records, None when it records none."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if TABLE not in connection.introspection.table_names(cursor):
            return None
        return read(cursor).database


def record(using: str, plan: Iterable[tuple[Migration, bool]]) -> None:
    """Record the migrations migrate just applied or unapplied on using, and any not recorded.

    A database migrated before the table existed gets this code's
    fingerprints for the migrations it holds that this code knows.
    """
    connection = connections[using]
    now = datetime.now(UTC).isoformat()
    mine = known()
    with connection.cursor() as cursor:
        cursor.execute(CREATE)
        for migration, backwards in plan:
            key = (migration.app_label, migration.name)
            if backwards:
                cursor.execute(f"DELETE FROM {TABLE} WHERE app = %s AND name = %s", list(key))
            elif key in mine:
                cursor.execute(
                    UPSERT + "UPDATE SET fingerprint = excluded.fingerprint, "
                    "version = excluded.version, recorded_at = excluded.recorded_at",
                    [*key, mine[key], __version__, now],
                )
        # Sent after every flush too: look before writing, so a recorded database costs two reads.
        cursor.execute(f"SELECT app, name FROM {TABLE}")
        recorded = set(cursor.fetchall())
        cursor.execute("SELECT app, name FROM django_migrations")
        for app, name in set(cursor.fetchall()) - recorded:
            if (app, name) in mine:
                cursor.execute(UPSERT + "NOTHING", [app, name, mine[app, name], __version__, now])


def on_post_migrate(sender: Any, using: str = "", plan: Any = None, **kwargs: Any) -> None:
    """Keep kindler_schema in step after every migrate (sent once per app: act once)."""
    if sender.label == "kindler_db":
        record(using, plan or [])
