"""`createsuperuser` on the active database unless --database names one."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management.commands import createsuperuser
from django.core.management.base import CommandError, CommandParser
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from kindler.db.failover.routers import current_alias
from kindler.db.sync.accounts import AccountsReadOnly


class Command(createsuperuser.Command):
    help = (
        "Create a superuser (every permission, whatever the groups) on the active database. "
        "For least privilege, add people in the admin and put them in the Viewers or "
        "Operators group."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(database=None)

    def execute(self, *args: Any, **options: Any) -> str | None:
        # Django's own command reads options["database"] in execute() already.
        options["database"] = options.get("database") or current_alias()
        self._database = options["database"]
        try:
            return super().execute(*args, **options)
        except AccountsReadOnly as exc:
            raise CommandError(str(exc)) from None

    def check_migrations(self) -> None:
        # Django checks `default`, a dummy here: check the alias written to.
        executor = MigrationExecutor(connections[self._database])
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            self.stdout.write(
                self.style.NOTICE(
                    f"Database {self._database} has unapplied migrations; "
                    "run `python manage.py migrate` first."
                )
            )
