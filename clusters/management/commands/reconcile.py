"""`manage.py reconcile [--once] [--interval SECONDS]`: run the cluster reconciler."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from clusters.reconciler import PassReport, Reconciler
from clusters.registry import Heartbeat
from kindler.stopping import stop_on_signals


class Command(BaseCommand):
    help = (
        "Make every cluster's actual state match its desired state: create, start, "
        "stop and delete clusters with k3d or kind. Loops until Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run one pass and exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=2.0,
            help="Seconds between passes (default 2).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        heartbeat = Heartbeat()
        with stop_on_signals(stop):
            try:
                reconciler = Reconciler(stop, heartbeat=heartbeat)
                if options["once"]:
                    heartbeat.beat()
                    self.show(reconciler.run_once())
                else:
                    heartbeat.start()
                    self.stdout.write(
                        f"Reconciling the clusters of host {heartbeat.host} every "
                        f"{options['interval']:g} s (Ctrl-C to stop)."
                    )
                    # Each action is logged (with a timestamp) by kindler.reconciler.
                    reconciler.run_forever(options["interval"], lambda report: None)
                    self.stdout.write("Reconciler stopped.")
            finally:
                heartbeat.stop()

    def show(self, report: PassReport) -> None:
        for line in report.lines:
            self.stdout.write(line)
        if report.database_error:
            self.stderr.write(f"Database error: {report.database_error}")
