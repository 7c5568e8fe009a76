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
        self.write_sync(report["sync"])

    def write_sync(self, sync: dict[str, Any] | None) -> None:
        if sync is None:
            return
        journal = sync["journal"]
        oldest = f", oldest {journal['oldest']}" if journal["oldest"] else ""
        self.stdout.write(f"Journal:         {journal['pending']} pending{oldest}")
        conflicts = sync["open_conflicts"]
        shown = "unknown (PostgreSQL is away)" if conflicts is None else str(conflicts)
        self.stdout.write(f"Open conflicts:  {shown}")
        self.stdout.write(f"Last replay:     {describe_run(sync['last_replay'])}")
        self.stdout.write(f"Last mirror:     {describe_run(sync['last_mirror'])}")
        lag = sync["mirror_lag_seconds"]
        self.stdout.write(f"Mirror lag:      {'never mirrored' if lag is None else f'{lag:.1f} s'}")


def describe_run(run: dict[str, Any] | None) -> str:
    """Return one line for a replay or mirror run."""
    if run is None:
        return "never"
    outcome = "ok" if run["ok"] else "FAILED"
    return f"{run['at']} {outcome} in {run['duration_ms']:.0f} ms: {run['result']}"
