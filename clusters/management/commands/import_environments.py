"""`manage.py import_environments [PATH]`: load the original environments.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from clusters.environments import MAX_FIELD_LENGTH, MAX_LINE_LENGTH, import_file
from kindler.commands import RoutineCommand


class Command(RoutineCommand):
    help = (
        "Import clusters from an environments.csv file (default config/environments.csv). "
        "Every line is imported or rejected with its number and reason; lines longer than "
        f"{MAX_LINE_LENGTH} bytes and values longer than {MAX_FIELD_LENGTH} characters are "
        "rejected. Exits with status 1 when any line was rejected."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", type=Path, help="CSV file to read.")
        parser.add_argument(
            "--check", action="store_true", help="Report every line's verdict; write nothing."
        )
        parser.add_argument(
            "--atomic", action="store_true", help="Import nothing unless every line is good."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"] or settings.BASE_DIR / "config" / "environments.csv"
        try:
            with path.open("rb") as handle:
                report = import_file(
                    handle, source=str(path), check=options["check"], atomic=options["atomic"]
                )
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
        if options["check"]:
            self.stdout.write("Nothing written: --check only reports.")
        elif not report.written:
            self.stdout.write(
                "Nothing written: --atomic imports a file only when every line is good."
            )
        if report.rejected:
            raise CommandError(f"{len(report.rejected)} line(s) of {path} were rejected.")
