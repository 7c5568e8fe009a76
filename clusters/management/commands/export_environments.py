"""`manage.py export_environments [PATH]`: write the inventory as environments.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from clusters.environments import render
from clusters.models import Cluster, DesiredState
from kindler.commands import RoutineCommand


class Command(RoutineCommand):
    help = (
        "Write every cluster in the inventory (not those marked for deletion) in the "
        "environments.csv format, to PATH or to standard output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", type=Path, help="File to write (default stdout).")
        parser.add_argument(
            "--with-host",
            action="store_true",
            help="Write the host column even when every cluster is on one Docker host.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        clusters = Cluster.objects.exclude(desired_state=DesiredState.ABSENT).order_by("name")
        text = render(clusters, with_host=options["with_host"])
        path: Path | None = options["path"]
        if path is None:
            self.stdout.write(text, ending="")
            return
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot write {path}: {exc.strerror}.") from None
        self.stdout.write(f"{len(text.splitlines()) - 1} cluster(s) written to {path}.")
