"""`changepassword` on the active database unless --database names one."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management.commands import changepassword
from django.core.management.base import CommandError, CommandParser

from kindler.db.failover.routers import current_alias
from kindler.db.sync.accounts import AccountsReadOnly


class Command(changepassword.Command):
    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(database=None)

    def handle(self, *args: Any, **options: Any) -> str | None:
        options["database"] = options.get("database") or current_alias()
        try:
            return super().handle(*args, **options)
        except AccountsReadOnly as exc:
            raise CommandError(str(exc)) from None
