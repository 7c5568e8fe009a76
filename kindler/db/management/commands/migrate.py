"""`migrate` that brings every configured alias up to date, not `default`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django.core.management.commands import migrate
from django.db import DEFAULT_DB_ALIAS

from kindler.db import POSTGRES, SQLITE
from kindler.db.failover.monitor import probe_postgres
from kindler.db.failover.pinning import postgres_configured
from kindler.db.sync.adopt import waiting_for_adoption


class Command(migrate.Command):
    help = (
        "Migrate the SQLite file and, when configured and reachable, PostgreSQL. "
        "--database migrates one alias only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(database=None)

    def get_check_kwargs(self, options: dict[str, Any]) -> Any:
        # Database checks run per alias inside handle(); none for `default`.
        kwargs = super().get_check_kwargs(options)
        if options["database"] in (None, DEFAULT_DB_ALIAS):
            kwargs["databases"] = []
        return kwargs

    def handle(self, *args: Any, **options: Any) -> None:
        if options["database"] not in (None, DEFAULT_DB_ALIAS):
            super().handle(*args, **options)
            return
        aliases = self.aliases()
        for alias in aliases:
            if options["verbosity"] >= 1:
                self.stdout.write(self.style.MIGRATE_HEADING(f"Database {alias}:"))
            super().handle(*args, **{**options, "database": alias})
        if POSTGRES in aliases and options["verbosity"] >= 1:
            waiting = waiting_for_adoption()
            if waiting is not None:
                self.stdout.write(self.style.WARNING(waiting.notice()))

    def aliases(self) -> list[str]:
        """Return the aliases to migrate, warning about an unreachable PostgreSQL."""
        if not postgres_configured():
            return [SQLITE]
        probe = probe_postgres()
        if not probe.reachable:
            self.stderr.write(
                self.style.WARNING(f"Skipping PostgreSQL, it cannot be reached: {probe.error}")
            )
            return [SQLITE]
        return [POSTGRES, SQLITE]
