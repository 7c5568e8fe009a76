"""Shared by the benchmarks: a throwaway PostgreSQL and Django pointed at it."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.environment import is_setting  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

# The benchmarks' Kindler reads no config/secrets.env: its servers are the
# benchmark's own, never the ones the person running it configured.
NO_SECRETS_FILE = str(Path(tempfile.mkdtemp(prefix="kindler-bench-")) / "secrets.env")


def kindler_environ(**extra: str) -> dict[str, str]:
    """Return this process's environment without Kindler's settings, plus extra."""
    env = {name: value for name, value in os.environ.items() if not is_setting(name)}
    return {**env, "KINDLER_SECRETS_FILE": NO_SECRETS_FILE, **extra}


def start_postgres(durable: bool = False) -> PostgresServer:
    """Start a throwaway server and create the kindler database on it."""
    server = PostgresServer(durable=durable)
    server.init()
    server.start()
    server.create_database("kindler")
    return server


def configure_django(server: PostgresServer, **extra_env: str) -> Path:
    """Point Kindler's settings at server and a fresh SQLite file; migrate both."""
    data = Path(tempfile.mkdtemp(prefix="kindler-bench-"))
    os.environ.update(
        KINDLER_SECRETS_FILE=NO_SECRETS_FILE,
        DJANGO_SETTINGS_MODULE="kindler.settings",
        PG_HOST=server.host,
        PG_PORT=str(server.port),
        PG_DATABASE="kindler",
        PG_USER=server.user,
        PG_PASSWORD=server.password,
        SQLITE_PATH=str(data / "kindler.db"),
        SECRET_KEY="bench-" + os.urandom(8).hex(),
        **extra_env,
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return data
