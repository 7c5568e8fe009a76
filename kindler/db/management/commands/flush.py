"""`flush` that never journals the rows it removes.

Emptying the SQLite file is not a change to carry into PostgreSQL: without
this, every row deleted here would be journaled and later deleted there too.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import flush

from kindler.db.sync.journal import journal_suppressed


class Command(flush.Command):
    def handle(self, **options: Any) -> None:
        with journal_suppressed():
            super().handle(**options)
