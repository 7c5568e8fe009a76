from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import got_request_exception
from django.db.backends.signals import connection_created
from django.db.models.signals import post_delete, post_migrate, post_save


class DatabaseConfig(AppConfig):
    name = "kindler.db"
    label = "kindler_db"
    verbose_name = "Kindler database layer"

    def ready(self) -> None:
        # Imported here, not at the top: these modules use models, which
        # cannot be imported before the app registry is ready.
        from kindler.db import telemetry
        from kindler.db.failover import middleware, monitor, state, timeouts
        from kindler.db.models import rows_updated
        from kindler.db.sync import accounts, journal, recovery, writethrough

        timeouts.install()
        got_request_exception.connect(
            middleware.remember_database_error, dispatch_uid="kindler.db.remember_error"
        )
        connection_created.connect(
            journal.register_functions, dispatch_uid="kindler.db.journal_functions"
        )
        post_migrate.connect(journal.on_post_migrate, dispatch_uid="kindler.db.journal_triggers")
        accounts.connect()
        connection_created.connect(
            telemetry.observe_connection, dispatch_uid="kindler.db.observe_connection"
        )
        state.switched.connect(telemetry.record_switch, dispatch_uid="kindler.db.record_switch")
        monitor.ticked.connect(
            recovery.mirror_thread.ensure_running, dispatch_uid="kindler.db.mirror_thread"
        )
        post_save.connect(writethrough.remember_save, dispatch_uid="kindler.db.wt_save")
        post_delete.connect(writethrough.remember_delete, dispatch_uid="kindler.db.wt_delete")
        rows_updated.connect(writethrough.remember_update, dispatch_uid="kindler.db.wt_update")
