"""`manage.py serve`: migrate, then run the web server, the WebSocket server and the reconciler."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clusters.registry import first_run_advice
from kindler import wsserver
from kindler.supervisor import run_together

# The ASGI application kindler.wsserver serves: /ws/tasks.
WEBSOCKETS = "clusters.websocket:application"


class Command(BaseCommand):
    help = (
        "Migrate every database, then run the web server, the WebSocket server "
        "(KINDLER_WS_BIND) and the reconciler until Ctrl-C or SIGTERM stops them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-reconciler", action="store_true", help="Run the web server only.")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0, stdout=self.stdout)
        call_command("ensure_admin", stdout=self.stdout)
        # Session files outlive their expiry until swept; a start sweeps them.
        call_command("clearsessions")
        call_command("collectstatic", interactive=False, verbosity=0)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        commands = [[sys.executable, "-m", "kindler.webserver"]]
        if not wsserver.is_off():
            commands.append([sys.executable, "-m", "kindler.wsserver", WEBSOCKETS])
        advice = None
        if not options["no_reconciler"]:
            commands.append([*manage, "reconcile"])
            advice = first_run_advice()
        self.stdout.write("Starting Kindler (Ctrl-C to stop).")
        if advice:
            self.stdout.write(advice)
        # Out before the children start: under a service manager stdout is a
        # pipe, and the generated password would otherwise wait in the buffer.
        self.stdout.flush()
        status = run_together(commands)
        if status:
            raise CommandError(f"Kindler stopped: a process exited with status {status}.")
