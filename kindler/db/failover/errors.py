"""Name what went wrong with a database: an outage, a busy server, an unusable SQLite file."""

from __future__ import annotations

import re
import sqlite3

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from django.core.management.base import CommandError
from django.db import DatabaseError

from kindler.db.pool import PoolTimeout

# Only the password's own places in connection strings are masked:
# `password=...` (libpq key/value) and `user:...@host` (URIs). Masking the
# password wherever it appears would mangle messages that merely contain it.
_KEY_VALUE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URI = re.compile(r"(\w+://[^:/@\s]*:)([^@\s]+)(@)")


class RequestTooSlow(psycopg2.OperationalError):
    """The request's deadline (KINDLER_REQUEST_DEADLINE) passed while it waited for PostgreSQL.

    Slow is not down: never an outage, so nothing falls back for it.
    """


class CommitNotSent(RequestTooSlow):
    """Too little of the request's deadline was left for a COMMIT's answer, so none was sent.

    Unlike a COMMIT cut off mid-way, the outcome is known: nothing was saved.
    """


# PostgreSQL answers, but cannot take Kindler's writes: a demoted primary or a
# full disk (read-only), or a database nobody migrated (tables missing).
_UNUSABLE = (
    psycopg2.errors.ReadOnlySqlTransaction,
    psycopg2.errors.UndefinedTable,
    psycopg2.errors.UndefinedColumn,
)
# The server is up but a statement waited too long (a lock someone holds), or
# this process's connections were all in use: not an outage.
_BUSY = (
    psycopg2.extensions.QueryCanceledError,
    psycopg2.errors.LockNotAvailable,
    PoolTimeout,
    RequestTooSlow,
)

SWITCHED_BACK = "kindler: this instance is back on PostgreSQL"


class PostgreSQLUnavailable(DatabaseError, CommandError):
    """No PostgreSQL takes writes and the SQLite fallback is off (KINDLER_FALLBACK=off).

    Raised by the router instead of a query. A DatabaseError, so code that
    handles database outages handles it; a CommandError, so a management
    command stops with this one line and exit status 1.
    """


def _chain(exc: BaseException | None) -> list[BaseException]:
    found: list[BaseException] = []
    while exc is not None and len(found) < 20:
        found.append(exc)
        exc = exc.__cause__ or exc.__context__
    return found


def is_postgres_outage(exc: BaseException | None) -> bool:
    """Return True when exc, or what caused it, says PostgreSQL cannot be used now."""
    for error in _chain(exc):
        if isinstance(error, _BUSY):
            return False
        if isinstance(error, PostgreSQLUnavailable):
            return True
        if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError, *_UNUSABLE)):
            return True
    return False


# PostgreSQL answers but cannot store a change: disk or WAL space gone
# (53100), out of some other resource (53xxx), or read-only (25006).
_WRITE_BLOCKED = {
    "53100": "its disk is full",
    "53000": "it is out of resources",
    "53200": "it is out of memory",
    "25006": "it is read-only",
}


def is_cut_short(exc: BaseException | None) -> bool:
    """Return True when exc says one connection was ended, not that the server refused it.

    pg_terminate_backend (SQLSTATE 57P01), or the connection closed under it
    (a proxy passing the end on): a new connection may well work. A refused
    or timed-out connection is the server's own answer.
    """
    for error in _chain(exc):
        if getattr(error, "pgcode", None) == "57P01":
            return True
        text = str(error)
        if "terminating connection" in text or "closed the connection unexpectedly" in text:
            return True
    return False


def write_blocked(exc: BaseException | None) -> str | None:
    """Return why PostgreSQL cannot take writes when exc says so (disk full, read-only)."""
    for error in _chain(exc):
        code = getattr(error, "pgcode", None)
        if code in _WRITE_BLOCKED:
            return (
                f"PostgreSQL cannot take writes: {_WRITE_BLOCKED[code]} ({describe_error(error)})"
            )
        if "No space left on device" in str(error):
            return f"PostgreSQL cannot take writes: its disk is full ({describe_error(error)})"
    return None


def is_postgres_busy(exc: BaseException | None) -> bool:
    """Return True when a statement hit the statement or lock timeout."""
    return any(isinstance(error, _BUSY) for error in _chain(exc))


def is_too_slow(exc: BaseException | None) -> bool:
    """Return True when the request's deadline passed while it waited for PostgreSQL."""
    return any(isinstance(error, RequestTooSlow) for error in _chain(exc))


def is_deadlock(exc: BaseException | None) -> bool:
    """Return True when PostgreSQL ended exc's transaction to break a deadlock (safe to rerun)."""
    return any(isinstance(error, psycopg2.errors.DeadlockDetected) for error in _chain(exc))


def is_commit_not_sent(exc: BaseException | None) -> bool:
    """Return True when the request's COMMIT was never sent (too late): nothing was saved."""
    return any(isinstance(error, CommitNotSent) for error in _chain(exc))


def pool_exhausted(exc: BaseException | None) -> str | None:
    """Return what to tell a person when no pooled connection came within PG_POOL_TIMEOUT."""
    for error in _chain(exc):
        if isinstance(error, PoolTimeout):
            return f"Kindler is busy: {error}. Nothing was saved; retry in a moment."
    return None


def is_switched_back(exc: BaseException | None) -> bool:
    """Return True when SQLite refused a write because the instance is on PostgreSQL again."""
    return any(SWITCHED_BACK in str(error) for error in _chain(exc))


# SQLITE_READONLY (8) and its extended codes (low byte 8): the file or its
# folder could not be opened for writing when this connection opened it, or
# was moved away since. SQLite then opens the file read-only and keeps it so
# for the connection's life, even once the file is writable again.
# SQLITE_CANTOPEN (14): the file, its -wal or -shm could not be opened.
_CANNOT_WRITE = (8, 14)


def sqlite_cannot_write(exc: BaseException | None) -> bool:
    """Return True when SQLite says this connection cannot write or open the file."""
    for error in _chain(exc):
        code = getattr(error, "sqlite_errorcode", None)
        if (
            isinstance(error, sqlite3.Error)
            and isinstance(code, int)
            and code & 0xFF in _CANNOT_WRITE
        ):
            return True
    return False


def sqlite_trouble(exc: BaseException | None) -> str | None:
    """Return what a person should be told when the SQLite file cannot take a write."""
    for error in _chain(exc):
        if not isinstance(error, sqlite3.Error):
            continue
        text = str(error).lower()
        if "locked" in text or "busy" in text:
            return (
                "The local SQLite file is locked by another program, so nothing was saved. "
                "Retry in a moment."
            )
        if "full" in text:
            return "The disk holding the local SQLite file is full, so nothing was saved."
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return (
                "The local SQLite file cannot be written (read-only file or folder), "
                "so nothing was saved."
            )
        if "disk i/o" in text:
            return "The local SQLite file could not be written (disk I/O error); nothing was saved."
    return None


def mask_secrets(text: str) -> str:
    """Return text with passwords in connection strings replaced by ***."""
    text = _KEY_VALUE.sub(r"\1***", text)
    return _URI.sub(r"\1***\3", text)


def describe_error(exc: BaseException) -> str:
    """Return a one-line, secret-free description of a database error."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    return mask_secrets(message)
