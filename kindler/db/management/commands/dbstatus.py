"""`manage.py dbstatus [--json]`: which database Kindler uses, and why."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from kindler.db import stats
from kindler.db.health import monitor
from kindler.db.status import database_report


class Command(BaseCommand):
    help = "Show the active database, its state, and whether PostgreSQL answers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = database_report(monitor.check_now())
        report.update(stats.report())
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        postgres = report["postgres"]
        if not postgres["configured"]:
            reachability = "not configured (PG_HOST is unset)"
        elif postgres["reachable"]:
            reachability = f"reachable, {postgres['latency_ms']:.1f} ms"
        else:
            reachability = f"unreachable: {postgres['error']}"
        self.stdout.write(f"Active database: {report['active']}")
        self.stdout.write(f"State:           {report['state']} since {report['since']}")
        self.stdout.write(f"PostgreSQL:      {reachability}")
        for line in stats.report_lines(report):
            self.stdout.write(line)
