#!/usr/bin/env python
"""Django's command-line utility for Kindler."""

import os
import re
import sys

# SQLite's and PostgreSQL's words for a table that migrate has not made yet.
MISSING_TABLE = re.compile(r"no such table: \w+|relation \"\w+\" does not exist")


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kindler.settings")
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
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


if __name__ == "__main__":
    main()
