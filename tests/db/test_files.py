"""Private files (kindler/db/files.py): the SQLite file, what is beside it, config/secrets.env."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from kindler.db.files import append_line, make_private, replace_text
from tests.conftest import BOTH, WebServer, wait_for

TOKEN = "f" * 40


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_sqlite_file_and_its_companions_become_private(tmp_path: Path) -> None:
    database = tmp_path / "kindler.db"
    for name in ("kindler.db", "kindler.db-wal", "kindler.db-shm"):
        (tmp_path / name).write_bytes(b"")
        os.chmod(tmp_path / name, 0o644)
    make_private(None, SimpleNamespace(vendor="sqlite", settings_dict={"NAME": str(database)}))
    assert [mode(tmp_path / n) for n in ("kindler.db", "kindler.db-wal", "kindler.db-shm")] == [
        0o600,
        0o600,
        0o600,
    ]


def test_other_databases_are_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_bytes(b"")
    os.chmod(other, 0o644)
    make_private(None, SimpleNamespace(vendor="postgresql", settings_dict={"NAME": str(other)}))
    assert mode(other) == 0o644


@pytest.mark.django_db(databases=BOTH)
def test_kindlers_own_sqlite_file_is_private() -> None:
    connections["sqlite"].ensure_connection()
    assert mode(str(settings.DATABASES["sqlite"]["NAME"])) == 0o600


def test_an_appended_file_is_made_private_and_stays_so(tmp_path: Path) -> None:
    path = tmp_path / "kindler.db.switches"
    path.write_text("older\n")
    os.chmod(path, 0o644)
    append_line(path, "newer\n")
    assert (path.read_text(), mode(path)) == ("older\nnewer\n", 0o600)
    replace_text(path, "newer\n")
    assert (path.read_text(), mode(path)) == ("newer\n", 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kindler.db.switches"]


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_everything_a_running_instance_writes_beside_its_sqlite_file_is_private(
    start_web_server: Callable[..., WebServer], kindler_env: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    sqlite_path = str(data / "kindler.db")
    # PostgreSQL configured but away: the instance falls back, and records the switch.
    away = {"PG_HOST": "127.0.0.1", "PG_PORT": "1", "PG_PASSWORD": "x"}
    env = {**kindler_env, **away, "SQLITE_PATH": sqlite_path}
    env.pop("SECRET_KEY", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        env=env,
        cwd=settings.BASE_DIR,
        check=True,
    )
    server = start_web_server(
        **away,
        SQLITE_PATH=sqlite_path,
        SECRET_KEY="",
        KINDLER_METRICS_DIR=f"{sqlite_path}.metrics",
        KINDLER_API_TOKEN=TOKEN,
    )
    wait_for(server.answers)
    assert server.get("/api/clusters", TOKEN)[0] == 200
    assert server.get("/api/metrics", TOKEN)[0] == 200
    written = {path: mode(path) for path in data.rglob("*")}
    assert {
        data / "kindler.db",
        data / "kindler.db.metrics",
        data / "kindler.db.switches",
        data / "secret_key",
    } <= set(written)
    assert any(path.parent.name == "kindler.db.metrics" for path in written)
    assert {
        str(path.relative_to(data)): oct(found)
        for path, found in written.items()
        if found != (0o700 if path.is_dir() else 0o600)
    } == {}
    assert mode(data) == 0o700


@pytest.fixture
def secrets_file(tmp_path: Path, settings: Any) -> Path:
    path = tmp_path / "secrets.env"
    path.write_text("PG_PASSWORD=x\n")
    settings.KINDLER_SECRETS_FILE = path
    return path


def warning_for(path: Path) -> str:
    return (
        f"{path} can be read by every user of this machine (mode 0644); "
        f"make it private: chmod 600 {path}"
    )


def test_check_deploy_reports_a_secrets_file_other_users_can_read(secrets_file: Path) -> None:
    os.chmod(secrets_file, 0o644)
    out = StringIO()
    call_command("check", "--deploy", "--tag", "security", stdout=out, stderr=out)
    assert f"?: (kindler.W001) {warning_for(secrets_file)}" in out.getvalue().splitlines()


def test_check_deploy_is_quiet_about_a_private_secrets_file(secrets_file: Path) -> None:
    os.chmod(secrets_file, 0o600)
    out = StringIO()
    call_command("check", "--deploy", "--tag", "security", stdout=out, stderr=out)
    assert "kindler.W001" not in out.getvalue()


@pytest.mark.django_db(databases=BOTH)
def test_dbstatus_reports_a_secrets_file_other_users_can_read(secrets_file: Path) -> None:
    os.chmod(secrets_file, 0o644)
    out = StringIO()
    call_command("dbstatus", stdout=out)
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("Warning:")]
    assert warnings == [f"Warning:         {warning_for(secrets_file)}"]
    out = StringIO()
    call_command("dbstatus", "--json", stdout=out)
    assert json.loads(out.getvalue())["warnings"] == [warning_for(secrets_file)]


@pytest.mark.django_db(databases=BOTH)
def test_dbstatus_says_nothing_of_a_private_secrets_file(secrets_file: Path) -> None:
    os.chmod(secrets_file, 0o600)
    out = StringIO()
    call_command("dbstatus", "--json", stdout=out)
    assert json.loads(out.getvalue())["warnings"] == []
