"""A client-side deadline on every wait for PostgreSQL.

libpq waits forever for an answer from a backend that was paused (SIGSTOP)
or cut off without a reset, and a server-side statement_timeout cannot fire
in a process that is not running. psycopg2's wait callback lets the client
give up instead: connecting is bounded by PG_CONNECT_TIMEOUT, every query by
PG_STATEMENT_TIMEOUT plus a second (the server's own timeout normally wins).
A wait also ends as soon as the instance falls back after the wait began
(any process of the instance may declare it, see kindler.db.failover.state),
so a request stuck on a paused backend is released within one probe of the
outage instead of at the statement deadline.

A request also has a deadline of its own (KINDLER_REQUEST_DEADLINE, set by
the failover middleware): every wait of the request ends by then, whatever
is left of the per-statement bound, with RequestTooSlow. A request on a slow
PostgreSQL thus answers within its deadline however many round trips it
makes, instead of within one bound per statement.

A COMMIT is never cut by that deadline: cut mid-way its outcome would be
unknown (saved or not, the person could not be told). It is sent only while
the deadline leaves at least the request's fastest round trip so far, and
then its answer is awaited within the statement bound; too late, it is not
sent at all, and the request answers "too slow" with nothing saved.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.extensions as ext
from django.conf import settings

from kindler.db.failover import state
from kindler.db.failover.errors import CommitNotSent, RequestTooSlow
from kindler.db.failover.state import State

STATEMENT_MARGIN = 1.0
# How often a long wait looks at the instance state; select() still returns at once
# when the socket is ready, so this costs nothing on a healthy server.
SLICE = 0.1

_deadline: ContextVar[float | None] = ContextVar("kindler_wait_deadline", default=None)
# time.monotonic() at which the current request's deadline passes.
_request_ends: ContextVar[float | None] = ContextVar("kindler_request_ends", default=None)
# The current request's fastest answered wait, in seconds (one slot, updated
# in place): on a slow link, the least a COMMIT's answer can take.
_fastest_wait: ContextVar[list[float] | None] = ContextVar("kindler_fastest_wait", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every wait inside the block by seconds (the health probe's own budget)."""
    token = _deadline.set(seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Bound every wait for PostgreSQL inside the block, together, by seconds from now."""
    token = _request_ends.set(time.monotonic() + seconds)
    fastest = _fastest_wait.set([float("inf")])
    try:
        yield
    finally:
        _fastest_wait.reset(fastest)
        _request_ends.reset(token)


@contextlib.contextmanager
def outside_request() -> Iterator[None]:
    """Lift the request's deadline inside the block (a health probe keeps its own budget)."""
    token = _request_ends.set(None)
    try:
        yield
    finally:
        _request_ends.reset(token)


def request_time_left() -> float | None:
    """Return the seconds left before the current request's deadline, or None outside one."""
    ends = _request_ends.get()
    return None if ends is None else ends - time.monotonic()


@contextlib.contextmanager
def commit_in_time() -> Iterator[None]:
    """Send the COMMIT inside the block only with time left for its answer, then await it.

    Raises CommitNotSent, before anything is sent, when less of the request's
    deadline is left than its fastest round trip so far. Otherwise the
    request's deadline is lifted until the answer comes (the statement bound
    still holds), so the outcome of a sent COMMIT is always known.
    """
    left = request_time_left()
    fastest = _fastest_wait.get()
    if left is None:
        yield
        return
    if left <= 0 or (fastest is not None and left < fastest[0]):
        raise CommitNotSent(
            f"the request's deadline left {max(left, 0.0):.3f} s, less than a round trip: "
            "the transaction was not committed"
        )
    with outside_request():
        yield


def wait_with_deadline(conn: Any) -> None:
    """Wait for conn like psycopg2's blocking mode would, but not forever."""
    if conn.status == ext.STATUS_SETUP:
        timeout = float(settings.PG_CONNECT_TIMEOUT)
        doing = "connecting"
    else:
        timeout = float(settings.PG_STATEMENT_TIMEOUT) + STATEMENT_MARGIN
        doing = "waiting for a query"
    override = _deadline.get()
    if override is not None:
        timeout = min(timeout, override)
    started = time.monotonic()
    ends = _request_ends.get()
    too_slow = ends is not None and ends - started < timeout
    if ends is not None and too_slow:
        timeout = max(0.0, ends - started)
    started_at = time.time()
    give_up_at = started + timeout
    # The instance's state is read only after a slice passed with no answer:
    # a healthy server answers within the first one, and every query would
    # otherwise pay a stat() of the state file and a clock reading.
    answered = True
    while True:
        polled = conn.poll()
        if polled == ext.POLL_OK:
            fastest = _fastest_wait.get()
            if fastest is not None:
                fastest[0] = min(fastest[0], time.monotonic() - started)
            return
        now = time.monotonic()
        if now >= give_up_at and too_slow:
            give_up(conn, f"the request's deadline passed while {doing}", RequestTooSlow)
        if now >= give_up_at:
            give_up(conn, f"PostgreSQL did not answer within {timeout:g} s while {doing}")
        if not answered and declared_down_since(datetime.fromtimestamp(started_at, UTC)):
            give_up(conn, f"PostgreSQL was declared unreachable while {doing}")
        wait = min(SLICE, give_up_at - now)
        if polled == ext.POLL_READ:
            answered = bool(select.select([conn.fileno()], [], [], wait)[0])
        elif polled == ext.POLL_WRITE:
            answered = bool(select.select([], [conn.fileno()], [], wait)[1])
        else:
            raise psycopg2.OperationalError(f"unexpected poll state {polled}")


def give_up(
    conn: Any, message: str, error: type[psycopg2.OperationalError] = psycopg2.OperationalError
) -> None:
    """Shut conn's socket down (it is mid-protocol, unusable) and raise.

    conn.close() cannot be used here: psycopg2 holds the connection's lock
    while it waits, so closing from inside the wait blocks forever. Shutting
    the socket down makes every later use fail at once instead of hanging.
    """
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.shutdown(socket.SHUT_RDWR)
    raise error(message)


def declared_down_since(started_at: datetime) -> bool:
    """Return True when the instance fell back after started_at."""
    with contextlib.suppress(OSError):
        shared = state.read()
        return (
            shared is not None
            and shared.state in (State.FALLBACK, State.UNAVAILABLE)
            and shared.since > started_at
        )
    return False


def install() -> None:
    """Make every psycopg2 connection in this process use the deadline."""
    ext.set_wait_callback(wait_with_deadline)
