"""A checkout of an earlier commit of Kindler, run with the shared virtualenv.

Instances of two releases share one PostgreSQL during an upgrade, and a
journal written by one release is replayed by the next: the tests that say so
run real earlier code, not a simulation of it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from tests.pgserver import PostgresServer

ROOT = Path(settings.BASE_DIR)


@contextlib.contextmanager
def checkout(commit: str, folder: Path) -> Iterator[Path]:
    """Check commit out into folder (a detached git worktree); remove it afterwards."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), commit],
        check=True,
        capture_output=True,
    )
    try:
        yield folder
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)],
            check=False,
            capture_output=True,
        )


def environment(pg_server: PostgresServer, database: str, sqlite: Path) -> dict[str, str]:
    """Return the environment of an instance on database and its own SQLite file."""
    return {
        # The fake k3d and kind come first (tests/conftest.py): earlier code
        # checks for the provider's binary before it saves a cluster.
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "kindler.settings",
        "SECRET_KEY": "earlier-" + secrets.token_hex(16),
        "PG_HOST": pg_server.host,
        "PG_PORT": str(pg_server.port),
        "PG_DATABASE": database,
        "PG_USER": pg_server.user,
        "PG_PASSWORD": pg_server.password,
        "PG_CONNECT_TIMEOUT": "1",
        "SQLITE_PATH": str(sqlite),
        "KINDLER_HEALTH_INTERVAL": "0.2",
        "KINDLER_MIRROR_INTERVAL": "0",
        "KINDLER_SECRETS_FILE": str(sqlite.parent / "no-secrets.env"),
        "KINDLER_DEFAULT_HOST": "docker-earlier",
    }


def manage(folder: Path, env: dict[str, str], *args: str) -> str:
    """Run manage.py args from folder's code; return its output, failing on an error."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout
