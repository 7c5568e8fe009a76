"""Kindler's SQLite backend: a connection that found the file read-only is not kept."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connections

from kindler.db.backends.sqlite3.base import DatabaseWrapper
from tests.faults import Immutable, held_open, read_only


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    """A SQLite file in WAL mode with one table, held open by another process."""
    path = tmp_path / "kindler.db"
    with held_open(path, "CREATE TABLE t (x)"):
        yield path


@pytest.fixture
def wrapper(database: Path, django_db_blocker: Any) -> Iterator[DatabaseWrapper]:
    """Kindler's backend on that file, with the settings of the `sqlite` database."""
    settings_dict = {**connections["sqlite"].settings_dict, "NAME": str(database)}
    connection = DatabaseWrapper(settings_dict, alias="sqlite")
    with django_db_blocker.unblock():
        yield connection
    connection.close()


def insert(connection: DatabaseWrapper, value: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO t VALUES (%s)", [value])


def rows(database: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return [x for (x,) in conn.execute("SELECT x FROM t ORDER BY x")]


def test_a_connection_opened_while_the_file_was_read_only_is_closed_after_its_write_fails(
    database: Path, wrapper: DatabaseWrapper
) -> None:
    with read_only(database), pytest.raises(OperationalError) as refused:
        insert(wrapper, 1)
    # The file is writable again; the connection is not, so Django drops it.
    usable = wrapper.is_usable()
    wrapper.close_if_unusable_or_obsolete()
    closed = wrapper.connection is None
    insert(wrapper, 2)
    assert (str(refused.value), usable, closed, rows(database)) == (
        "attempt to write a readonly database",
        False,
        True,
        [2],
    )


def test_a_connection_opened_before_the_file_went_read_only_is_kept(
    database: Path, wrapper: DatabaseWrapper
) -> None:
    wrapper.ensure_connection()
    with read_only(database), pytest.raises(OperationalError) as refused:
        insert(wrapper, 1)
    # Opened for writing, it writes again once the file is writable.
    usable = wrapper.is_usable()
    wrapper.close_if_unusable_or_obsolete()
    kept = wrapper.connection is not None
    insert(wrapper, 2)
    assert (usable, kept, rows(database)) == (True, True, [2])
    # chattr +i refuses the write itself; chmod only stops a new opening.
    assert str(refused.value) == (
        "disk I/O error"
        if Immutable.unavailable() is None
        else "attempt to write a readonly database"
    )


def test_a_new_connection_forgets_the_read_only_error_of_the_last(
    database: Path, wrapper: DatabaseWrapper
) -> None:
    with read_only(database), pytest.raises(OperationalError):
        insert(wrapper, 1)
    wrapper.close()
    wrapper.ensure_connection()
    assert wrapper.is_usable() is True
