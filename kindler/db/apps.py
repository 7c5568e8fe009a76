from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import got_request_exception
from django.db.backends.signals import connection_created
from django.db.models.signals import post_delete, post_migrate, post_save, pre_migrate

from kindler.db.failover.pinning import sqlite_fallback_enabled


class DatabaseConfig(AppConfig):
    name = "kindler.db"
    label = "kindler_db"
    verbose_name = "Kindler database layer"

    def ready(self) -> None:
        # Imported here, not at the top: these modules use models, which
        # cannot be imported before the app registry is ready.
        from kindler.db import files, samples, status, telemetry
        from kindler.db.failover import middleware, monitor, schema, state, timeouts
        from kindler.db.models import rows_updated
        from kindler.db.sync import accounts, identity, journal, recovery, writethrough

        timeouts.install()
        got_request_exception.connect(
            middleware.remember_database_error, dispatch_uid="kindler.db.remember_error"
        )
        connection_created.connect(
            journal.register_functions, dispatch_uid="kindler.db.journal_functions"
        )
        pre_migrate.connect(journal.on_pre_migrate, dispatch_uid="kindler.db.journal_triggers_off")
        post_migrate.connect(journal.on_post_migrate, dispatch_uid="kindler.db.journal_triggers")
        post_migrate.connect(schema.on_post_migrate, dispatch_uid="kindler.db.schema_record")
        accounts.connect()
        connection_created.connect(
            telemetry.observe_connection, dispatch_uid="kindler.db.observe_connection"
        )
        connection_created.connect(files.make_private, dispatch_uid="kindler.db.private_files")
        checks.register(files.check_secrets_file, checks.Tags.security, deploy=True)
        monitor.probed.connect(samples.record_probe, dispatch_uid="kindler.db.record_sample")
        state.switched.connect(telemetry.record_switch, dispatch_uid="kindler.db.record_switch")
        state.host_moved.connect(
            telemetry.record_host_change, dispatch_uid="kindler.db.record_host_change"
        )
        identity.primary_changed.connect(
            telemetry.record_primary_change, dispatch_uid="kindler.db.record_primary_change"
        )
        monitor.probed.connect(
            status.record_connections, dispatch_uid="kindler.db.connection_history"
        )
        # The mirror and the write-through copy PostgreSQL into SQLite: off in
        # PostgreSQL-only mode, checked on every call so settings may change.
        monitor.ticked.connect(
            with_sqlite(recovery.mirror_thread.ensure_running),
            weak=False,
            dispatch_uid="kindler.db.mirror_thread",
        )
        post_save.connect(
            with_sqlite(writethrough.remember_save), weak=False, dispatch_uid="kindler.db.wt_save"
        )
        post_delete.connect(
            with_sqlite(writethrough.remember_delete),
            weak=False,
            dispatch_uid="kindler.db.wt_delete",
        )
        rows_updated.connect(
            with_sqlite(writethrough.remember_update),
            weak=False,
            dispatch_uid="kindler.db.wt_update",
        )


def with_sqlite(receiver: Callable[..., Any]) -> Callable[..., None]:
    """Return receiver, made to do nothing in PostgreSQL-only mode (KINDLER_FALLBACK=off)."""

    @functools.wraps(receiver)
    def run(*args: Any, **kwargs: Any) -> None:
        if sqlite_fallback_enabled():
            receiver(*args, **kwargs)

    return run
