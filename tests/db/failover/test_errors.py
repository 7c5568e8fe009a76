"""What went wrong with a database, named from real errors (kindler/db/failover/errors.py)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from django.conf import settings

from kindler.db.failover.errors import (
    describe_error,
    is_postgres_busy,
    is_postgres_outage,
    mask_secrets,
    sqlite_cannot_write,
    sqlite_trouble,
)
from kindler.db.failover.monitor import monitor
from tests.pgserver import PostgresServer, free_port

SCRATCH_TABLE = "kindler_errors_scratch"


@pytest.fixture
def scratch_table(pg_server: PostgresServer) -> Iterator[str]:
    """A table of its own in the `postgres` database, dropped afterwards."""
    with contextlib.closing(connect(pg_server)) as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {SCRATCH_TABLE} (id int)")
    yield SCRATCH_TABLE
    with contextlib.closing(connect(pg_server)) as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")


@pytest.fixture
def short_password(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """PG_PASSWORD set to "x", with no probe running meanwhile (it could not log in)."""
    monitor.stop()
    monkeypatch.setitem(settings.DATABASES["postgres"], "PASSWORD", "x")
    yield "x"
    monitor.reset()


def raised(action: Callable[[], object]) -> BaseException:
    """Run action and return what it raised."""
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the caller checks the type
        action()
    return caught.value


def connect(pg: PostgresServer, **kwargs: Any) -> Any:
    """Return an autocommit superuser connection to the server's `postgres` database."""
    conn = psycopg2.connect(**{**pg.connect_kwargs(), "connect_timeout": 5, **kwargs})
    conn.autocommit = True
    return conn


def statement_timeout(pg: PostgresServer, table: str) -> BaseException:
    with contextlib.closing(connect(pg)) as conn, conn.cursor() as cursor:
        cursor.execute("SET statement_timeout = 10")
        return raised(lambda: cursor.execute("SELECT pg_sleep(1)"))


def lock_not_available(pg: PostgresServer, table: str) -> BaseException:
    with contextlib.closing(connect(pg)) as holder, holder.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        with contextlib.closing(connect(pg)) as other, other.cursor() as waiting:
            waiting.execute("BEGIN")
            return raised(lambda: waiting.execute(f"LOCK TABLE {table} NOWAIT"))


def read_only_transaction(pg: PostgresServer, table: str) -> BaseException:
    with contextlib.closing(connect(pg)) as conn, conn.cursor() as cursor:
        cursor.execute("BEGIN READ ONLY")
        return raised(lambda: cursor.execute(f"INSERT INTO {table} VALUES (1)"))


def undefined_table(pg: PostgresServer, table: str) -> BaseException:
    with contextlib.closing(connect(pg)) as conn, conn.cursor() as cursor:
        return raised(lambda: cursor.execute("SELECT * FROM kindler_no_such_table"))


def connection_refused(pg: PostgresServer, table: str) -> BaseException:
    return raised(lambda: connect(pg, port=free_port()))


def test_mask_secrets_masks_a_key_value_password() -> None:
    assert mask_secrets("could not connect with host=db password=secret user=kindler") == (
        "could not connect with host=db password=*** user=kindler"
    )


def test_mask_secrets_masks_a_quoted_key_value_password() -> None:
    assert mask_secrets("host=db password='se cret' user=kindler") == (
        "host=db password=*** user=kindler"
    )


def test_mask_secrets_masks_the_password_of_a_uri() -> None:
    assert mask_secrets("cannot reach postgresql://kindler:secret@db:5432/kindler") == (
        "cannot reach postgresql://kindler:***@db:5432/kindler"
    )


def test_describe_error_leaves_words_that_contain_a_short_password(
    pg_server: PostgresServer, short_password: str
) -> None:
    error = raised(
        lambda: psycopg2.connect(
            **pg_server.connect_kwargs("kindler_no_such_database"), connect_timeout=5
        )
    )
    assert describe_error(error) == ('FATAL: database "kindler_no_such_database" does not exist')


def test_describe_error_masks_the_password_of_a_dsn_libpq_quotes() -> None:
    error = raised(lambda: psycopg2.connect("postgresql://kindler:s3cret-pw@[db"))
    assert (type(error), describe_error(error)) == (
        psycopg2.ProgrammingError,
        'invalid dsn: end of string reached when looking for matching "]" in IPv6 host '
        'address in URI: "postgresql://kindler:***@[db"',
    )


@pytest.mark.parametrize(
    ("cause", "kind"),
    [
        (statement_timeout, psycopg2.errors.QueryCanceled),
        (lock_not_available, psycopg2.errors.LockNotAvailable),
    ],
    ids=["statement timeout", "lock not available"],
)
def test_a_timeout_is_no_outage(
    pg_server: PostgresServer,
    scratch_table: str,
    cause: Callable[[PostgresServer, str], BaseException],
    kind: type,
) -> None:
    error = cause(pg_server, scratch_table)
    assert (type(error), is_postgres_outage(error)) == (kind, False)


@pytest.mark.parametrize(
    "cause", [statement_timeout, lock_not_available], ids=["statement timeout", "lock"]
)
def test_a_timeout_means_postgres_is_busy(
    pg_server: PostgresServer,
    scratch_table: str,
    cause: Callable[[PostgresServer, str], BaseException],
) -> None:
    assert is_postgres_busy(cause(pg_server, scratch_table)) is True


@pytest.mark.parametrize(
    ("cause", "kind"),
    [
        (connection_refused, psycopg2.OperationalError),
        (read_only_transaction, psycopg2.errors.ReadOnlySqlTransaction),
        (undefined_table, psycopg2.errors.UndefinedTable),
    ],
    ids=["connection refused", "read-only", "table missing"],
)
def test_postgres_that_cannot_take_writes_is_an_outage(
    pg_server: PostgresServer,
    scratch_table: str,
    cause: Callable[[PostgresServer, str], BaseException],
    kind: type,
) -> None:
    error = cause(pg_server, scratch_table)
    assert (type(error), is_postgres_outage(error)) == (kind, True)


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """An autocommit connection to a new SQLite file with one table."""
    conn = sqlite3.connect(tmp_path / "kindler.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    yield conn
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")
    conn.close()


def test_sqlite_trouble_names_a_file_locked_by_another_program(
    sqlite_file: sqlite3.Connection, tmp_path: Path
) -> None:
    sqlite_file.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(tmp_path / "kindler.db", timeout=0, isolation_level=None)
    try:
        error = raised(lambda: other.execute("INSERT INTO t VALUES (1)"))
    finally:
        other.close()
    assert (str(error), sqlite_trouble(error)) == (
        "database is locked",
        "The local SQLite file is locked by another program, so nothing was saved. "
        "Retry in a moment.",
    )


def test_sqlite_trouble_names_a_full_disk(sqlite_file: sqlite3.Connection) -> None:
    (pages,) = sqlite_file.execute("PRAGMA page_count").fetchone()
    sqlite_file.execute(f"PRAGMA max_page_count = {pages}")
    error = raised(lambda: sqlite_file.execute("INSERT INTO t VALUES (zeroblob(100000))"))
    assert (str(error), sqlite_trouble(error)) == (
        "database or disk is full",
        "The disk holding the local SQLite file is full, so nothing was saved.",
    )


def test_sqlite_trouble_names_a_read_only_file(sqlite_file: sqlite3.Connection) -> None:
    sqlite_file.execute("PRAGMA query_only = 1")
    error = raised(lambda: sqlite_file.execute("INSERT INTO t VALUES (1)"))
    assert (str(error), sqlite_trouble(error)) == (
        "attempt to write a readonly database",
        "The local SQLite file cannot be written (read-only file or folder), so nothing was saved.",
    )


def test_a_connection_opened_read_only_cannot_write(
    sqlite_file: sqlite3.Connection, tmp_path: Path
) -> None:
    other = sqlite3.connect(f"file:{tmp_path / 'kindler.db'}?mode=ro", uri=True)
    try:
        error = raised(lambda: other.execute("INSERT INTO t VALUES (1)"))
    finally:
        other.close()
    assert (error.sqlite_errorcode, sqlite_cannot_write(error)) == (  # type: ignore[attr-defined]
        sqlite3.SQLITE_READONLY,
        True,
    )


def test_a_locked_or_full_sqlite_file_is_not_a_connection_that_cannot_write(
    sqlite_file: sqlite3.Connection, tmp_path: Path
) -> None:
    sqlite_file.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(tmp_path / "kindler.db", timeout=0, isolation_level=None)
    try:
        locked = raised(lambda: other.execute("INSERT INTO t VALUES (1)"))
    finally:
        other.close()
    sqlite_file.execute("ROLLBACK")
    (pages,) = sqlite_file.execute("PRAGMA page_count").fetchone()
    sqlite_file.execute(f"PRAGMA max_page_count = {pages}")
    full = raised(lambda: sqlite_file.execute("INSERT INTO t VALUES (zeroblob(100000))"))
    assert (sqlite_cannot_write(locked), sqlite_cannot_write(full)) == (False, False)


def test_sqlite_trouble_is_none_for_a_postgres_error(
    pg_server: PostgresServer, scratch_table: str
) -> None:
    assert sqlite_trouble(undefined_table(pg_server, scratch_table)) is None
