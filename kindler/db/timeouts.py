"""A client-side deadline on every wait for PostgreSQL.

libpq waits forever for an answer from a backend that was paused (SIGSTOP)
or cut off without a reset, and a server-side statement_timeout cannot fire
in a process that is not running. psycopg2's wait callback lets the client
give up instead: connecting is bounded by PG_CONNECT_TIMEOUT, every query by
PG_STATEMENT_TIMEOUT plus a second (the server's own timeout normally wins).
"""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg2
import psycopg2.extensions as ext
from django.conf import settings

STATEMENT_MARGIN = 1.0


def wait_with_deadline(conn: Any) -> None:
    """Wait for conn like psycopg2's blocking mode would, but not forever."""
    if conn.status == ext.STATUS_SETUP:
        timeout = float(settings.PG_CONNECT_TIMEOUT)
        doing = "connecting"
    else:
        timeout = float(settings.PG_STATEMENT_TIMEOUT) + STATEMENT_MARGIN
        doing = "waiting for a query"
    deadline = time.monotonic() + timeout
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            # The socket is mid-protocol: close it so nobody reuses it.
            conn.close()
            raise psycopg2.OperationalError(
                f"PostgreSQL did not answer within {timeout:g} s while {doing}"
            )
        if state == ext.POLL_READ:
            select.select([conn.fileno()], [], [], remaining)
        elif state == ext.POLL_WRITE:
            select.select([], [conn.fileno()], [], remaining)
        else:
            raise psycopg2.OperationalError(f"unexpected poll state {state}")


def install() -> None:
    """Make every psycopg2 connection in this process use the deadline."""
    ext.set_wait_callback(wait_with_deadline)
