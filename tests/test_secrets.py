"""Secrets from NAME or from the file NAME_FILE names (kindler/secrets.py, kindler/settings.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from kindler.secrets import read_secret
from tests.environment import child_environ
from tests.faults import admin_connection
from tests.pgserver import PostgresServer

SCRAM_ROLE = "kindler_scram"
SCRAM_PASSWORD = "scram-password-from-a-file"


# Long enough for every secret: an API token under 32 characters stops the start.
SECRET = "s3cret-value-of-thirty-two-chars"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    return path


def test_the_variable_alone_is_read() -> None:
    assert read_secret("PG_PASSWORD", {"PG_PASSWORD": "from-env"}) == "from-env"


def test_nothing_set_reads_as_empty() -> None:
    assert read_secret("PG_PASSWORD", {}) == ""


def test_the_file_is_read_without_its_trailing_newline(secret_file: Path) -> None:
    assert read_secret("PG_PASSWORD", {"PG_PASSWORD_FILE": str(secret_file)}) == SECRET


def test_windows_line_endings_are_stripped_too(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"value\r\n\r\n")
    assert read_secret("SECRET_KEY", {"SECRET_KEY_FILE": str(path)}) == "value"


def test_setting_both_forms_is_an_error(secret_file: Path) -> None:
    environ = {"KINDLER_API_TOKEN": "x", "KINDLER_API_TOKEN_FILE": str(secret_file)}
    with pytest.raises(ImproperlyConfigured) as raised:
        read_secret("KINDLER_API_TOKEN", environ)
    assert str(raised.value) == "Set KINDLER_API_TOKEN or KINDLER_API_TOKEN_FILE, not both."


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(ImproperlyConfigured) as raised:
        read_secret("PG_PASSWORD", {"PG_PASSWORD_FILE": str(path)})
    assert str(raised.value) == f"Cannot read PG_PASSWORD_FILE {path}: No such file or directory"


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        read_secret("SECRET_KEY", {"SECRET_KEY_FILE": str(tmp_path)})
    assert str(raised.value) == f"Cannot read SECRET_KEY_FILE {tmp_path}: Is a directory"


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("\n")
    with pytest.raises(ImproperlyConfigured) as raised:
        read_secret("PG_PASSWORD", {"PG_PASSWORD_FILE": str(path)})
    assert str(raised.value) == f"PG_PASSWORD_FILE {path} is empty"


def test_an_error_never_shows_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "binary"
    path.write_bytes(b"\xffs3cret-value")
    with pytest.raises(ImproperlyConfigured) as raised:
        read_secret("PG_PASSWORD", {"PG_PASSWORD_FILE": str(path)})
    assert (str(raised.value), raised.value.__cause__, raised.value.__suppress_context__) == (
        f"PG_PASSWORD_FILE {path} is not UTF-8 text",
        None,
        True,
    )


def run_kindler(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh Kindler process (settings read from env), as a start would."""
    clean = child_environ(DJANGO_SETTINGS_MODULE="kindler.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env=clean,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "setting"),
    [
        ("PG_PASSWORD", "DATABASES['postgres']['PASSWORD']"),
        ("SECRET_KEY", "SECRET_KEY"),
        ("KINDLER_API_TOKEN", "KINDLER_API_TOKEN"),
        ("KINDLER_ADMIN_PASSWORD", "KINDLER_ADMIN_PASSWORD"),
    ],
)
def test_every_secret_setting_reads_its_file(
    variable: str, setting: str, secret_file: Path, tmp_path: Path
) -> None:
    env = {
        f"{variable}_FILE": str(secret_file),
        "PG_HOST": "127.0.0.1",
        "SQLITE_PATH": str(tmp_path / "kindler.db"),
    }
    result = run_kindler(env, f"from django.conf import settings; print(settings.{setting})")
    assert (result.returncode, result.stdout) == (0, SECRET + "\n")


@pytest.mark.parametrize(
    "variable", ["PG_PASSWORD", "SECRET_KEY", "KINDLER_API_TOKEN", "KINDLER_ADMIN_PASSWORD"]
)
def test_a_file_that_cannot_be_read_stops_the_start(variable: str, tmp_path: Path) -> None:
    path = tmp_path / "absent"
    env = {
        f"{variable}_FILE": str(path),
        "PG_HOST": "127.0.0.1",
        "SQLITE_PATH": str(tmp_path / "kindler.db"),
    }
    result = run_kindler(env, "pass")
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        1,
        "django.core.exceptions.ImproperlyConfigured: "
        f"Cannot read {variable}_FILE {path}: No such file or directory",
    )


@pytest.fixture(scope="module")
def scram_role(pg_server: PostgresServer) -> str:
    """A role whose password PostgreSQL checks with scram-sha-256 (pg_hba for 127.0.0.1)."""
    pg_server.add_role(SCRAM_ROLE, SCRAM_PASSWORD, "postgres")
    return SCRAM_ROLE


def connect_as(role: str, password_file: Path, pg: PostgresServer, tmp_path: Path) -> Any:
    env = {
        "PG_HOST": pg.host,
        "PG_PORT": str(pg.port),
        "PG_DATABASE": "postgres",
        "PG_USER": role,
        "PG_PASSWORD_FILE": str(password_file),
        "SQLITE_PATH": str(tmp_path / "kindler.db"),
    }
    code = (
        "from django.db import connections; c = connections['postgres'].cursor(); "
        "c.execute('SELECT current_user'); print(*c.fetchone())"
    )
    return run_kindler(env, code)


def test_the_role_logs_in_over_tcp_with_scram(scram_role: str, pg_server: PostgresServer) -> None:
    conn = admin_connection(pg_server)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid "
                "WHERE rolname = %s), (SELECT array_agg(DISTINCT auth_method) "
                "FROM pg_hba_file_rules WHERE type = 'host')",
                [scram_role],
            )
            assert cursor.fetchone() == (True, ["scram-sha-256"])
    finally:
        conn.close()


def test_scram_authentication_with_the_password_from_a_file(
    scram_role: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    password_file = tmp_path / "pg_password"
    password_file.write_text(SCRAM_PASSWORD + "\n")
    result = connect_as(scram_role, password_file, pg_server, tmp_path)
    assert (result.returncode, result.stdout) == (0, f"{SCRAM_ROLE}\n")


def test_a_wrong_password_in_the_file_is_refused_without_showing_it(
    scram_role: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    password_file = tmp_path / "pg_password"
    password_file.write_text("not-the-password\n")
    result = connect_as(scram_role, password_file, pg_server, tmp_path)
    assert (
        result.returncode,
        f'password authentication failed for user "{SCRAM_ROLE}"' in result.stderr,
        "not-the-password" in result.stderr,
    ) == (1, True, False)
