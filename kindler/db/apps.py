from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import got_request_exception


class DatabaseConfig(AppConfig):
    name = "kindler.db"
    label = "kindler_db"
    verbose_name = "Kindler database layer"

    def ready(self) -> None:
        from kindler.db import middleware, timeouts

        timeouts.install()
        got_request_exception.connect(
            middleware.remember_outage, dispatch_uid="kindler.db.remember_outage"
        )
