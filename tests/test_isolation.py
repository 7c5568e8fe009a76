"""The suite never reads the configuration of the person running it, nor touches their servers.

A fresh copy of the checkout gets a config/secrets.env for "their" PostgreSQL
(a database and role of their own on the tests' server), and the run gets
their PG_* and KINDLER_* variables too; the tests that start Kindler
processes still pass, and their database sees no session at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.docs.sessions import fresh_copy
from tests.docs.settings_read import settings_read
from tests.environment import is_setting
from tests.faults import admin_connection
from tests.pgserver import PostgresServer

THEIR_DATABASE = "someone_elses"
THEIR_ROLE = "someone"
THEIR_PASSWORD = "their-own-password"
# The tests a config/secrets.env broke, or sent to its PostgreSQL: they start
# Kindler processes (manage.py, scripts/manage) and read secrets.
KEY_TESTS = ("tests/test_secrets.py", "tests/test_manage_script.py")


def sessions(pg: PostgresServer) -> int:
    """Return how many sessions their database has ever had (counted when each ends)."""
    conn = admin_connection(pg)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", [THEIR_DATABASE]
            )
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


def tables(pg: PostgresServer) -> list[str]:
    conn = admin_connection(pg, THEIR_DATABASE)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return sorted(row[0] for row in cursor.fetchall())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def their_server(pg_server: PostgresServer) -> PostgresServer:
    """The tests' server with a database and a role of someone else's on it."""
    pg_server.create_database(THEIR_DATABASE)
    pg_server.add_role(THEIR_ROLE, THEIR_PASSWORD, THEIR_DATABASE)
    return pg_server


def test_every_setting_the_code_reads_is_cleared_for_the_tests() -> None:
    harness = {
        "KINDLER_TEST_MODE",
        "KINDLER_TEST_MODES",
        "KINDLER_TEST_WORKERS",
        "KINDLER_PG_BINDIR",
        "PYENV_ROOT",
    }
    kept = sorted(name for name in settings_read() if not is_setting(name))
    assert kept == sorted(harness)


def test_the_tests_run_with_no_settings_file() -> None:
    assert (os.environ["KINDLER_SECRETS_FILE"], settings.KINDLER_SECRETS_FILE.exists()) == (
        str(settings.KINDLER_SECRETS_FILE),
        False,
    )


@pytest.mark.slow
def test_the_suite_ignores_their_secrets_env_and_variables(
    their_server: PostgresServer, tmp_path: Path
) -> None:
    pg_server = their_server
    copy = fresh_copy(tmp_path / "kindler")
    password_file = tmp_path / "pg_password"
    password_file.write_text(THEIR_PASSWORD + "\n")
    secrets_env = copy / "config" / "secrets.env"
    secrets_env.write_text(
        f"PG_HOST={pg_server.host}\n"
        f"PG_PORT={pg_server.port}\n"
        f"PG_DATABASE={THEIR_DATABASE}\n"
        f"PG_USER={THEIR_ROLE}\n"
        f"PG_PASSWORD_FILE={password_file}\n"
        "KINDLER_API_TOKEN=their-token-their-token-their-token\n"
    )
    secrets_env.chmod(0o600)
    theirs = {
        "PG_HOST": pg_server.host,
        "PG_PORT": str(pg_server.port),
        "PG_DATABASE": THEIR_DATABASE,
        "PG_USER": THEIR_ROLE,
        "KINDLER_FALLBACK": "off",
        "KINDLER_BIND": "0.0.0.0:8000",
        "SECRET_KEY": "their-secret-key",
    }
    env = {name: value for name, value in os.environ.items() if not is_setting(name)}
    env = {name: value for name, value in env.items() if not name.startswith("PYTEST_")}
    before = sessions(pg_server)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *KEY_TESTS],
        cwd=copy,
        env={**env, **theirs, "KINDLER_TEST_MODE": "postgres"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert (sessions(pg_server), tables(pg_server)) == (before, [])
    assert not (copy / "data").exists()
