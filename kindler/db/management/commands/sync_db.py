"""`manage.py sync_db`: replay the journal and mirror PostgreSQL by hand."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from kindler.commands import RoutineCommand
from kindler.db.failover.errors import describe_error
from kindler.db.failover.monitor import probe_postgres
from kindler.db.failover.pinning import postgres_configured, sqlite_fallback_enabled
from kindler.db.failover.schema import OLDER
from kindler.db.sync.conflicts import ResolutionError, resolve
from kindler.db.sync.replay import ReplayError
from kindler.db.sync.runner import SyncReport, run

CONFLICTS_REMAIN = 2
LISTED = 50
PROGRESS_FROM = 1000
BAR = 30


class Command(RoutineCommand):
    help = (
        "Replay changes made on SQLite into PostgreSQL (--push) and copy PostgreSQL "
        "into SQLite (--pull); both by default. Exits 2 while conflicts remain."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--push", action="store_true", help="Replay the journal only.")
        parser.add_argument("--pull", action="store_true", help="Mirror PostgreSQL only.")
        parser.add_argument(
            "--all",
            action="store_true",
            help="With --push: carry every local row PostgreSQL lacks or holds older, "
            "not just the journal (adopt a new database by hand).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Report, change nothing.")
        parser.add_argument("--json", action="store_true", help="Print JSON.")
        parser.add_argument("--resolve", metavar="UID", help="Resolve the conflict UID.")
        parser.add_argument(
            "--keep", choices=["local", "remote"], help="With --resolve: which side wins."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not postgres_configured():
            raise CommandError("PostgreSQL is not configured (PG_HOST is unset): nothing to sync.")
        if not sqlite_fallback_enabled():
            raise CommandError(
                "PostgreSQL-only mode (KINDLER_FALLBACK=off): SQLite holds nothing to sync."
            )
        probe = probe_postgres()
        if not probe.reachable:
            raise CommandError(f"PostgreSQL cannot be reached: {probe.error}")
        if probe.upgrade_required:
            # The journal is kept for an upgraded instance: this code may write it wrongly.
            raise CommandError(f"{OLDER} ({probe.error})")
        if options["resolve"]:
            self.resolve(options)
            return
        if options["keep"]:
            raise CommandError("--keep needs --resolve UID.")
        if options["all"] and not options["push"]:
            raise CommandError("--all goes with --push.")
        both = not options["push"] and not options["pull"]
        try:
            report = run(
                push=both or options["push"],
                pull=both or options["pull"],
                push_every_row=options["all"],
                dry_run=options["dry_run"],
                progress=None if options["json"] else self.progress,
            )
        except (ReplayError, DatabaseError) as exc:
            raise CommandError(f"Sync stopped, the journal is kept: {describe_error(exc)}") from exc
        self.print_report(report, options)
        if report.open_conflicts:
            raise CommandError(
                f"{report.open_conflicts} conflict(s) remain.", returncode=CONFLICTS_REMAIN
            )

    def resolve(self, options: dict[str, Any]) -> None:
        if not options["keep"]:
            raise CommandError("--resolve needs --keep local or --keep remote.")
        try:
            conflict = resolve(options["resolve"], options["keep"])
        except ResolutionError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(f"Not resolved: {describe_error(exc)}") from exc
        if options["json"]:
            self.stdout.write(json.dumps({"uid": str(conflict.uid), "kept": options["keep"]}))
            return
        self.stdout.write(
            f"Conflict {conflict.uid} ({conflict.kind} on {conflict.name or conflict.row_uid}) "
            f"resolved: {conflict.get_resolution_display()}."
        )

    def progress(self, done: int, total: int) -> None:
        if total < PROGRESS_FROM:
            return
        filled = BAR * done // max(total, 1)
        self.stderr.write(f"\r[{'#' * filled}{'.' * (BAR - filled)}] {done}/{total}", ending="")
        if done >= total:
            self.stderr.write("")

    def print_report(self, report: SyncReport, options: dict[str, Any]) -> None:
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
            return
        prefix = "Dry run: " if options["dry_run"] else ""
        if report.replay is not None:
            r = report.replay
            self.stdout.write(
                f"{prefix}Pushed {r.pushed}, skipped {r.skipped}, conflicts {r.conflicts} "
                f"(of {r.total} journaled)."
            )
        if report.mirror is not None:
            m = report.mirror
            kind = "full" if m.full else "incremental"
            self.stdout.write(
                f"{prefix}Pulled {m.pulled}, deleted {m.deleted}, skipped {m.skipped} "
                f"({kind}); accounts changed {m.accounts}."
            )
        if report.pushed_all is not None:
            carried = report.pushed_all.carried
            self.stdout.write(
                f"{prefix}Carried {len(carried.restored)} local row(s) into PostgreSQL, "
                f"conflicts {carried.conflicts}; accounts added {report.pushed_all.accounts}."
            )
        restored = report.restored
        if restored:
            self.stdout.write(f"{prefix}Rows written back into PostgreSQL ({len(restored)}):")
            for label, uid, name, why in restored[:LISTED]:
                self.stdout.write(f"  {why} {label} {name or '-'} {uid}")
            if len(restored) > LISTED:
                self.stdout.write(f"  ... and {len(restored) - LISTED} more (see the admin).")
        self.stdout.write(
            f"Pending changes: {report.pending}. Open conflicts: {report.open_conflicts}."
        )
        for conflict in report.conflicts:
            self.stdout.write(
                f"  {conflict.uid} {conflict.kind} {conflict.name or conflict.row_uid}"
            )
        if report.open_conflicts:
            self.stdout.write(
                "Resolve them in the admin or with "
                "`scripts/manage sync_db --resolve UID --keep local|remote`."
            )
