"""Production settings: `check --deploy` is clean with the documented variables."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import BOTH
from tests.environment import child_environ

PRODUCTION_ENV = {
    "DEBUG": "false",
    "KINDLER_TLS": "true",
    "KINDLER_BEHIND_PROXY": "true",
    "ALLOWED_HOSTS": "kindler.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://kindler.example.com",
}
TLS_WARNINGS = ["security.W004", "security.W008", "security.W011", "security.W016"]


def manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a fresh process with Kindler's own settings."""
    base = child_environ()
    return subprocess.run(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args],
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": "kindler.settings",
            "SQLITE_PATH": str(tmp_path / "kindler.db"),
            "SECRET_KEY": secrets.token_urlsafe(50),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )


def test_check_deploy_is_clean_with_the_documented_variables(tmp_path: Path) -> None:
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV, tmp_path=tmp_path
    )
    assert (result.returncode, result.stdout.strip()) == (
        0,
        "System check identified no issues (0 silenced).",
    )


def test_check_deploy_without_tls_names_exactly_the_tls_warnings(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENV, "KINDLER_TLS": "false"}
    result = manage("check", "--deploy", env=env, tmp_path=tmp_path)
    found = sorted(
        line.split("(")[1].split(")")[0]
        for line in result.stderr.splitlines()
        if line.startswith("?: (security.")
    )
    assert found == TLS_WARNINGS


@pytest.mark.postgres
def test_pg_sslmode_reaches_libpq(tmp_path: Path, kindler_env: dict[str, Any]) -> None:
    env = {key: kindler_env[key] for key in kindler_env if key.startswith("PG_")}
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.db import connections; "
        "print(connections['postgres'].cursor().connection.get_dsn_parameters()['sslmode'])",
        env={**env, "PG_SSLMODE": "disable"},
        tmp_path=tmp_path,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "disable")


@pytest.mark.postgres
def test_pg_sslmode_require_refuses_a_server_without_tls(
    tmp_path: Path, kindler_env: dict[str, Any]
) -> None:
    env = {key: kindler_env[key] for key in kindler_env if key.startswith("PG_")}
    result = manage("dbstatus", "--json", env={**env, "PG_SSLMODE": "require"}, tmp_path=tmp_path)
    assert "server does not support SSL, but SSL was required" in result.stdout


@pytest.mark.django_db(databases=BOTH)
def test_every_response_carries_the_content_security_policy(client: Client) -> None:
    response = client.get("/api/health")
    assert response["Content-Security-Policy"] == (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    )
