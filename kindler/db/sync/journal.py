"""The journal: every change made on SQLite in place of PostgreSQL, in order.

SQLite triggers write the journal, in the same transaction as the change,
whatever the write path: Model.save, QuerySet.update (ClusterQuerySet
included), Model.delete and bulk QuerySet.delete, bulk_create and raw SQL.
Doing it in the model layer would need an override per path plus an extra
read for the row's old data, and would miss the next path someone adds.

A trigger only fires when kindler_journaling() says so. That SQL function is
registered on every SQLite connection and answers yes when PostgreSQL is
configured (SQLite then only receives application writes while it stands in
for PostgreSQL) unless the code writing is the mirror or the replay itself
(journal_suppressed()). In embedded mode (no PG_HOST) nothing is journaled.

A second trigger per table and operation guards the switch back: once the
instance state says primary, kindler_instance_primary() is true and an
unpinned write on SQLite is refused (RAISE ABORT with SWITCHED_BACK), so
no change can land in SQLite behind the replay and reach PostgreSQL out of
order. The middleware checks the state before a request writes and goes to
PostgreSQL instead; the trigger covers every other writer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.apps import apps
from django.db import connections, transaction
from django.db.models import Min, Model

from kindler import __version__
from kindler.db import POSTGRES, SQLITE
from kindler.db.failover import state
from kindler.db.failover.errors import SWITCHED_BACK
from kindler.db.failover.pinning import pinned, postgres_configured
from kindler.db.models import InstanceIdentity, JournalEntry, SyncedModel

_suppressed: ContextVar[bool] = ContextVar("kindler_journal_suppressed", default=False)

JOURNAL_TABLE = "kindler_db_journalentry"
CHANGE_TABLE = "kindler_db_rowchange"
TOMBSTONE_TABLE = "kindler_db_tombstone"


def synced_models() -> list[type[Model]]:
    """Return every concrete model that is synced between the databases."""
    return [
        model
        for model in apps.get_models()
        if issubclass(model, SyncedModel) and not model._meta.abstract
    ]


def model_label(model: type[Model]) -> str:
    return str(model._meta.label_lower)


def journaling() -> bool:
    """Return True when a write on SQLite now must be journaled."""
    return postgres_configured() and not _suppressed.get()


@contextmanager
def journal_suppressed() -> Iterator[None]:
    """Write to SQLite without journaling (the mirror and the replay)."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def register_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Give a new SQLite connection the function the journal triggers call."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            "kindler_journaling", 0, lambda: int(journaling()), deterministic=False
        )
        connection.connection.create_function(
            "kindler_instance_primary", 0, lambda: int(instance_primary()), deterministic=False
        )


def instance_primary() -> bool:
    """Return True when an unpinned write on SQLite must be refused: the instance is primary.

    Code pinned to SQLite chose it for a whole unit of work: the middleware
    pins each request and checks the state itself under the write lock.
    """
    if pinned() is not None:
        return False
    shared = state.read()
    return shared is not None and shared.state is state.State.PRIMARY


def _json_object(prefix: str, columns: list[str]) -> str:
    pairs = ", ".join(f"'{column}', {prefix}.\"{column}\"" for column in columns)
    return f"json_object({pairs})"


def sqlite_trigger_sql(model: type[Model]) -> list[str]:
    """Return the statements that (re)create the journal triggers of model."""
    table = model._meta.db_table
    label = model_label(model)
    columns = [str(f.column) for f in model._meta.concrete_fields]
    now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    insert = (
        f"INSERT INTO {JOURNAL_TABLE} "
        "(model, uid, op, base_version, before, data, created_at, schema)"
    )
    statements = []
    for op, event, uid, base, before, data in (
        ("insert", "INSERT", "NEW.uid", "NULL", "NULL", _json_object("NEW", columns)),
        (
            "update",
            "UPDATE",
            "NEW.uid",
            "OLD.version",
            _json_object("OLD", columns),
            _json_object("NEW", columns),
        ),
        ("delete", "DELETE", "OLD.uid", "OLD.version", _json_object("OLD", columns), "NULL"),
    ):
        guard = f"kindler_guard_{table}_{op}"
        statements.append(f"DROP TRIGGER IF EXISTS {guard}")
        statements.append(
            f"CREATE TRIGGER {guard} BEFORE {event} ON {table} "
            "WHEN kindler_journaling() AND kindler_instance_primary() "
            f"BEGIN SELECT RAISE(ABORT, '{SWITCHED_BACK}'); END"
        )
        name = f"kindler_journal_{table}_{op}"
        statements.append(f"DROP TRIGGER IF EXISTS {name}")
        statements.append(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} WHEN kindler_journaling() "
            f"BEGIN {insert} VALUES ('{label}', {uid}, '{op}', {base}, {before}, {data}, {now}, "
            f"'{__version__}'); "
            "END"
        )
    return statements + tombstone_trigger_sql(model)


def tombstone_trigger_sql(model: type[Model]) -> list[str]:
    """Return the statements that keep SQLite's tombstones of model's rows.

    Unconditional, unlike the journal: a delete made here, copied by the
    write-through or by the mirror all leave a tombstone (a failover or a
    restore may bring the row back to PostgreSQL); a row inserted again
    with that uid takes its tombstone away.
    """
    table = model._meta.db_table
    label = model_label(model)
    now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    deleted, inserted = (f"kindler_tombstone_{table}_{op}" for op in ("delete", "insert"))
    return [
        f"DROP TRIGGER IF EXISTS {deleted}",
        f"CREATE TRIGGER {deleted} AFTER DELETE ON {table} BEGIN "
        f"INSERT OR REPLACE INTO {TOMBSTONE_TABLE} (model, uid, version, deleted_at) "
        f"VALUES ('{label}', OLD.uid, OLD.version, {now}); END",
        f"DROP TRIGGER IF EXISTS {inserted}",
        f"CREATE TRIGGER {inserted} AFTER INSERT ON {table} BEGIN "
        f"DELETE FROM {TOMBSTONE_TABLE} WHERE model = '{label}' AND uid = NEW.uid; END",
    ]


POSITION_SEQUENCE = "kindler_db_rowchange_position_seq"
IDENTITY_TABLE = "kindler_db_databaseidentity"

POSTGRES_SEQUENCE = f"CREATE SEQUENCE IF NOT EXISTS {POSITION_SEQUENCE}"

# Every change lands in the change log with the next position, whoever made
# it (Kindler, another instance, psql): the mirror reads changes since its
# last run from here, and deleted rows stay as tombstones. One statement per
# changed statement (transition tables), so a bulk write pays once, not per row.
POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION kindler_db_track_change() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO {CHANGE_TABLE} (model, uid, deleted, xid, position)
    SELECT TG_ARGV[0], uid, true, pg_current_xact_id()::text::bigint,
           nextval('{POSITION_SEQUENCE}')
    FROM old_rows
    ON CONFLICT (model, uid) DO UPDATE
      SET deleted = true, xid = EXCLUDED.xid, position = EXCLUDED.position;
  ELSE
    INSERT INTO {CHANGE_TABLE} (model, uid, deleted, xid, position)
    SELECT TG_ARGV[0], uid, false, pg_current_xact_id()::text::bigint,
           nextval('{POSITION_SEQUENCE}')
    FROM new_rows
    ON CONFLICT (model, uid) DO UPDATE
      SET deleted = false, xid = EXCLUDED.xid, position = EXCLUDED.position;
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

# A writer that is not Kindler (psql, a script) still moves the version, so
# every copy sees its change as newer; Kindler's own saves already bump it.
POSTGRES_VERSION_FUNCTION = """
CREATE OR REPLACE FUNCTION kindler_db_stamp_version() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.uid IS NULL THEN
      NEW.uid := gen_random_uuid();
    END IF;
    IF NEW.version IS NULL THEN
      NEW.version := 1;
    END IF;
  ELSIF NEW.version IS NULL OR NEW.version <= OLD.version THEN
    NEW.version := OLD.version + 1;
  END IF;
  RETURN NEW;
END
$$ LANGUAGE plpgsql
"""

# migrate names the database once; a dump carries the row along.
POSTGRES_IDENTITY = (
    f"INSERT INTO {IDENTITY_TABLE} (uuid, created_at) "
    f"SELECT gen_random_uuid(), now() WHERE NOT EXISTS (SELECT 1 FROM {IDENTITY_TABLE})"
)


def postgres_trigger_sql(model: type[Model]) -> list[str]:
    """Return the statements that make PostgreSQL record changes to model's rows."""
    table = model._meta.db_table
    track = f"kindler_track_{table}"
    stamp = f"kindler_stamp_{table}"
    label = model_label(model)
    statements = [f"DROP TRIGGER IF EXISTS {track} ON {table}"]
    for event, transition in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        name = f"{track}_{event.lower()}"
        statements += [
            f"DROP TRIGGER IF EXISTS {name} ON {table}",
            f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {transition} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION kindler_db_track_change('{label}')",
        ]
    # WHEN keeps the function call off the common path: Kindler's own writes
    # arrive with a uid and a bumped version.
    for event, when in (
        ("INSERT", "NEW.uid IS NULL OR NEW.version IS NULL"),
        ("UPDATE", "NEW.version IS NULL OR NEW.version <= OLD.version"),
    ):
        name = f"{stamp}_{event.lower()}"
        statements += [
            f"DROP TRIGGER IF EXISTS {name} ON {table}",
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW "
            f"WHEN ({when}) EXECUTE FUNCTION kindler_db_stamp_version()",
        ]
    return statements


def install_triggers(using: str) -> None:
    """Create the journal (SQLite) or change-tracking (PostgreSQL) triggers."""
    connection = connections[using]
    if using == SQLITE:
        statements = [sql for model in synced_models() for sql in sqlite_trigger_sql(model)]
    elif using == POSTGRES:
        statements = [POSTGRES_SEQUENCE, POSTGRES_FUNCTION, POSTGRES_VERSION_FUNCTION]
        statements += [sql for model in synced_models() for sql in postgres_trigger_sql(model)]
        if IDENTITY_TABLE in connection.introspection.table_names():
            statements.append(POSTGRES_IDENTITY)
    else:
        return
    with transaction.atomic(using=using), connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def drop_sqlite_triggers() -> None:
    """Drop SQLite's journal and guard triggers; on_post_migrate makes them again.

    SQLite refuses to drop or rename a column that a trigger reads, and the
    journal triggers read every column: without this, a migration that removes
    a synced column (any backward migrate past one that added it) fails.
    """
    names = [
        f"kindler_{kind}_{model._meta.db_table}_{op}"
        for model in synced_models()
        for kind in ("journal", "guard", "tombstone")
        for op in ("insert", "update", "delete")
    ]
    with transaction.atomic(using=SQLITE), connections[SQLITE].cursor() as cursor:
        for name in names:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


def on_pre_migrate(sender: Any, using: str = SQLITE, **kwargs: Any) -> None:
    """Take SQLite's triggers off before migrate changes the tables they read.

    Kindler's own processes stop while migrate runs (scripts/run and serve
    migrate before they start them), so nothing writes unjournaled meanwhile.
    """
    if sender.label == "kindler_db" and using == SQLITE:
        drop_sqlite_triggers()


def on_post_migrate(sender: Any, using: str = SQLITE, **kwargs: Any) -> None:
    """Keep the triggers in step with the models after every migrate or flush."""
    if sender.label != "kindler_db" or using not in (SQLITE, POSTGRES):
        return
    connection = connections[using]
    tables = connection.introspection.table_names()
    if JOURNAL_TABLE not in tables or any(m._meta.db_table not in tables for m in synced_models()):
        return
    if using == SQLITE and TOMBSTONE_TABLE not in tables:
        # Migrated back to before tombstones: that release makes its own triggers.
        return
    if using == SQLITE and not columns_match(connection):
        # Migrated back to an older schema: the triggers this code would make
        # read columns it lacks. The code of that older release makes its own.
        return
    install_triggers(using)


def columns_match(connection: Any) -> bool:
    """Return True when every synced table has every column its model declares."""
    with connection.cursor() as cursor:
        for model in synced_models():
            table = model._meta.db_table
            present = {
                c.name for c in connection.introspection.get_table_description(cursor, table)
            }
            if {str(f.column) for f in model._meta.concrete_fields} - present:
                return False
    return True


def instance_id() -> uuid.UUID:
    """Return this SQLite file's instance id, creating it on first use.

    Read from the file every time (one indexed query per replay), never
    cached: the id must be the one stored in the file, whatever happened
    to the process.
    """
    with transaction.atomic(using=SQLITE):
        identity = InstanceIdentity.objects.using(SQLITE).order_by("id").first()
        if identity is None:
            identity = InstanceIdentity.objects.using(SQLITE).create()
    return identity.instance_id


def pending() -> int:
    """Return how many journaled changes wait to be replayed."""
    return JournalEntry.objects.using(SQLITE).count()


def oldest_pending() -> str | None:
    """Return when the oldest unreplayed change was made (ISO 8601), if any."""
    oldest = JournalEntry.objects.using(SQLITE).aggregate(at=Min("created_at"))["at"]
    return str(oldest) if oldest else None


def journaled_uids(model: type[Model]) -> set[str]:
    """Return the uids (hex, as SQLite stores them) with unreplayed entries."""
    rows = JournalEntry.objects.using(SQLITE).filter(model=model_label(model))
    return {uid.replace("-", "") for uid in rows.values_list("uid", flat=True).distinct()}
