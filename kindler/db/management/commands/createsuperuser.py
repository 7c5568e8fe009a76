"""`createsuperuser` on the active database unless --database names one."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management.commands import createsuperuser
from django.core.management.base import CommandParser

from kindler.db.routing import current_alias


class Command(createsuperuser.Command):
    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(database=None)

    def execute(self, *args: Any, **options: Any) -> str | None:
        # Django's own command reads options["database"] in execute() already.
        options["database"] = options.get("database") or current_alias()
        return super().execute(*args, **options)
