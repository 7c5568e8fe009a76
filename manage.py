#!/usr/bin/env python
"""Django's command-line utility for Kindler."""

import os
import re
import sys

# SQLite's and PostgreSQL's words for a table that migrate has not made yet.
MISSING_TABLE = re.compile(r"no such table: \w+|relation \"\w+\" does not exist")
# Commands that look at or make migrations themselves, and help: they run on
# the SQLite file as it is.
AS_IT_IS = frozenset(
    {"migrate", "makemigrations", "showmigrations", "sqlmigrate", "squashmigrations", "help"}
)


def prepare(argv: list[str]) -> None:
    """Migrate the instance's own SQLite file first, unless the command is about migrations."""
    words = [word for word in argv[1:] if not word.startswith("-")]
    if not words or words[0] in AS_IT_IS or "--help" in argv or "-h" in argv:
        return
    import django

    django.setup()
    from kindler.db.sync.prepare import prepare_sqlite

    prepare_sqlite()


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kindler.settings")
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
        prepare(sys.argv)
        execute_from_command_line(sys.argv)
    except DatabaseError as error:
        # A command run before the first migrate would otherwise end in a traceback.
        missing = MISSING_TABLE.search(str(error))
        if missing is None:
            raise
        sys.stderr.write(
            f"The database is not set up yet ({missing.group(0)}): "
            "run `scripts/manage migrate` first (scripts/run does it for you).\n"
        )
        sys.exit(1)
    except KeyboardInterrupt:
        # Ctrl-C before a command set up its own stop (the reconciler still
        # loading under `serve`): the shell's status for it, no traceback.
        sys.exit(130)


if __name__ == "__main__":
    main()
