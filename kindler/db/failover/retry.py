"""Database work outside a request, run once more on a new connection when a kept one died.

A request does this in the failover middleware. Code that runs outside
requests (the reconciler's heartbeat) keeps its connection between calls, so
a PostgreSQL restart in between leaves it holding a dead one although the
server is back: the first statement fails, and reporting that as an outage
would send the instance to SQLite for nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import DatabaseError, connections

from kindler.db.failover.errors import is_postgres_outage


def on_live_connection[T](alias: str, work: Callable[[], T]) -> T:
    """Return work(); after an outage error on a connection opened before, retry on a new one.

    Only once, and only for a connection kept from earlier work: a new
    connection that fails means the server is away, and the caller says so.
    Inside a transaction nothing is retried (its earlier statements died
    with the connection).
    """
    connection = connections[alias]
    kept = connection.connection is not None and not connection.in_atomic_block
    try:
        return work()
    except DatabaseError as exc:
        if not (kept and is_postgres_outage(exc)):
            raise
    connection.close()
    return work()
