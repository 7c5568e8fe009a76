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
        from kindler.db import accounts, health, journal, middleware, stats, timeouts, writethrough

        timeouts.install()
        got_request_exception.connect(
            middleware.remember_outage, dispatch_uid="kindler.db.remember_outage"
        )
        connection_created.connect(
            journal.register_functions, dispatch_uid="kindler.db.journal_functions"
        )
        post_migrate.connect(journal.on_post_migrate, dispatch_uid="kindler.db.journal_triggers")
        accounts.connect()
        connection_created.connect(
            stats.observe_connection, dispatch_uid="kindler.db.observe_connection"
        )
        health.switched.connect(stats.record_switch, dispatch_uid="kindler.db.record_switch")
        post_save.connect(writethrough.remember_save, dispatch_uid="kindler.db.wt_save")
        post_delete.connect(writethrough.remember_delete, dispatch_uid="kindler.db.wt_delete")
