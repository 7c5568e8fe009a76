"""`manage.py import_environments [PATH]`: load the original environments.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clusters.environments import import_lines


class Command(BaseCommand):
    help = "Import clusters from an environments.csv file (default config/environments.csv)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", type=Path, help="CSV file to read.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"] or settings.BASE_DIR / "config" / "environments.csv"
        try:
            with path.open(encoding="utf-8") as handle:
                report = import_lines(handle, source=str(path))
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path} is not a UTF-8 text file.") from None
        for line, reason in report.rejected:
            self.stderr.write(f"{path}:{line}: rejected: {reason}")
        self.stdout.write(
            f"{len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged, {len(report.rejected)} rejected."
        )
        if report.rejected:
            raise CommandError(f"{len(report.rejected)} line(s) of {path} were rejected.")
