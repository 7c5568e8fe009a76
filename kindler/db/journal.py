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
Deciding by the configuration, not by the monitor's state, closes the race
where a request pinned to SQLite writes just after the switch back to
PostgreSQL: that change is journaled too, and replayed by the next sync.
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

from kindler.db import POSTGRES, SQLITE
from kindler.db.routing import postgres_configured

_suppressed: ContextVar[bool] = ContextVar("kindler_journal_suppressed", default=False)

JOURNAL_TABLE = "kindler_db_journalentry"
CHANGE_TABLE = "kindler_db_rowchange"


def synced_models() -> list[type[Model]]:
    """Return every concrete model that is synced between the databases."""
    from kindler.db.models import SyncedModel

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


def _json_object(prefix: str, columns: list[str]) -> str:
    pairs = ", ".join(f"'{column}', {prefix}.\"{column}\"" for column in columns)
    return f"json_object({pairs})"


def sqlite_trigger_sql(model: type[Model]) -> list[str]:
    """Return the statements that (re)create the journal triggers of model."""
    table = model._meta.db_table
    label = model_label(model)
    columns = [str(f.column) for f in model._meta.concrete_fields]
    now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    insert = f"INSERT INTO {JOURNAL_TABLE} (model, uid, op, base_version, before, data, created_at)"
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
        name = f"kindler_journal_{table}_{op}"
        statements.append(f"DROP TRIGGER IF EXISTS {name}")
        statements.append(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} WHEN kindler_journaling() "
            f"BEGIN {insert} VALUES ('{label}', {uid}, '{op}', {base}, {before}, {data}, {now}); "
            "END"
        )
    return statements


POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION kindler_db_track_change() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO {CHANGE_TABLE} (model, uid, deleted, xid)
    VALUES (TG_ARGV[0], OLD.uid, true, pg_current_xact_id()::text::bigint)
    ON CONFLICT (model, uid) DO UPDATE SET deleted = true, xid = EXCLUDED.xid;
    RETURN OLD;
  END IF;
  INSERT INTO {CHANGE_TABLE} (model, uid, deleted, xid)
  VALUES (TG_ARGV[0], NEW.uid, false, pg_current_xact_id()::text::bigint)
  ON CONFLICT (model, uid) DO UPDATE SET deleted = false, xid = EXCLUDED.xid;
  RETURN NEW;
END
$$ LANGUAGE plpgsql
"""


def postgres_trigger_sql(model: type[Model]) -> list[str]:
    """Return the statements that make PostgreSQL record changes to model's rows."""
    table = model._meta.db_table
    name = f"kindler_track_{table}"
    return [
        f"DROP TRIGGER IF EXISTS {name} ON {table}",
        f"CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION kindler_db_track_change('{model_label(model)}')",
    ]


def install_triggers(using: str) -> None:
    """Create the journal (SQLite) or change-tracking (PostgreSQL) triggers."""
    connection = connections[using]
    if using == SQLITE:
        statements = [sql for model in synced_models() for sql in sqlite_trigger_sql(model)]
    elif using == POSTGRES:
        statements = [POSTGRES_FUNCTION]
        statements += [sql for model in synced_models() for sql in postgres_trigger_sql(model)]
    else:
        return
    with transaction.atomic(using=using), connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def on_post_migrate(sender: Any, using: str = SQLITE, **kwargs: Any) -> None:
    """Keep the triggers in step with the models after every migrate or flush."""
    if sender.label != "kindler_db" or using not in (SQLITE, POSTGRES):
        return
    tables = connections[using].introspection.table_names()
    if JOURNAL_TABLE in tables and all(m._meta.db_table in tables for m in synced_models()):
        install_triggers(using)


def instance_id() -> uuid.UUID:
    """Return this SQLite file's instance id, creating it on first use.

    Read from the file every time (one indexed query per replay), never
    cached: the id must be the one stored in the file, whatever happened
    to the process.
    """
    from kindler.db.models import InstanceIdentity

    with transaction.atomic(using=SQLITE):
        identity = InstanceIdentity.objects.using(SQLITE).order_by("id").first()
        if identity is None:
            identity = InstanceIdentity.objects.using(SQLITE).create()
    return identity.instance_id


def pending() -> int:
    """Return how many journaled changes wait to be replayed."""
    from kindler.db.models import JournalEntry

    return JournalEntry.objects.using(SQLITE).count()


def oldest_pending() -> str | None:
    """Return when the oldest unreplayed change was made (ISO 8601), if any."""
    from kindler.db.models import JournalEntry

    oldest = JournalEntry.objects.using(SQLITE).aggregate(at=Min("created_at"))["at"]
    return str(oldest) if oldest else None


def journaled_uids(model: type[Model]) -> set[str]:
    """Return the uids (hex, as SQLite stores them) with unreplayed entries."""
    from kindler.db.models import JournalEntry

    rows = JournalEntry.objects.using(SQLITE).filter(model=model_label(model))
    return {uid.replace("-", "") for uid in rows.values_list("uid", flat=True).distinct()}
