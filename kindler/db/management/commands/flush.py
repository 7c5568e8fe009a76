"""`flush` that never journals the rows it removes, and outlasts a deadlock.

Emptying the SQLite file is not a change to carry into PostgreSQL: without
this, every row deleted here would be journaled and later deleted there too.

TRUNCATE locks its tables one after another, so a query of this instance's
(the health probe, a mirror pass) that reads two of them can deadlock with
it. PostgreSQL then rolls the flush back whole, and running it again is safe.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError
from django.core.management.commands import flush

from kindler.db.failover.errors import is_deadlock
from kindler.db.sync.journal import journal_suppressed

ATTEMPTS = 5


class Command(flush.Command):
    def handle(self, **options: Any) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with journal_suppressed():
                    super().handle(**options)
                return
            except CommandError as error:
                if attempt == ATTEMPTS or not is_deadlock(error):
                    raise
                time.sleep(0.05 * attempt)
