from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db import connections

from kindler.db.files import make_private
from tests.conftest import BOTH


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
