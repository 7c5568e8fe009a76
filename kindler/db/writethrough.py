"""Copy each change committed on PostgreSQL into SQLite at once.

The periodic mirror keeps SQLite a warm copy within KINDLER_MIRROR_INTERVAL,
but a failover inside that window would hide a cluster someone just created
(a read-your-writes gap). So every save or delete of a synced row on
PostgreSQL queues its uid, and when the transaction commits those rows are
copied into this instance's SQLite file. A failure here is logged and left
to the next mirror run: the change is safe in PostgreSQL either way.

Inside a web request the copy waits until the response has been handed to
the server (request_finished), so it costs the person nothing; elsewhere
(commands, the reconciler) it happens as the transaction commits.

QuerySet.update() sends no signal; rows changed that way (the reconciler's
state bookkeeping) reach SQLite with the next mirror run.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import connections, transaction
from django.db.models import Model

from kindler.db import POSTGRES
from kindler.db.errors import describe
from kindler.db.models import SyncedModel

logger = logging.getLogger("kindler.db")

_suppressed: ContextVar[bool] = ContextVar("kindler_writethrough_suppressed", default=False)
# Per worker thread: whether a request is being served, and what it wrote.
_request = threading.local()


@contextmanager
def suppressed() -> Iterator[None]:
    """Write to PostgreSQL without copying into SQLite, as another instance would."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


class Batch:
    """The synced rows one PostgreSQL transaction wrote, by model label."""

    def __init__(self) -> None:
        self.uids: dict[str, set[uuid.UUID]] = {}

    def add(self, instance: SyncedModel) -> None:
        self.uids.setdefault(instance._meta.label_lower, set()).add(instance.uid)

    def flush(self) -> None:
        uids, self.uids = self.uids, {}
        if uids:
            copy_after_request(uids)


def request_started(**kwargs: Any) -> None:
    """Start collecting this request's committed writes."""
    _request.uids = {}


def request_finished(**kwargs: Any) -> None:
    """Copy what this request committed on PostgreSQL, now that it has been answered."""
    uids: dict[str, set[uuid.UUID]] | None = getattr(_request, "uids", None)
    _request.uids = None
    if uids:
        copy_to_sqlite(uids)


def copy_after_request(uids: dict[str, set[uuid.UUID]]) -> None:
    """Copy these rows when the current request is answered, or now outside one."""
    pending: dict[str, set[uuid.UUID]] | None = getattr(_request, "uids", None)
    if pending is None:
        copy_to_sqlite(uids)
        return
    for label, wanted in uids.items():
        pending.setdefault(label, set()).update(wanted)


def copy_to_sqlite(uids: dict[str, set[uuid.UUID]]) -> None:
    """Refresh these rows in SQLite from PostgreSQL; log, never raise."""
    from kindler.db.mirror import refresh

    try:
        refresh(uids)
    except Exception as exc:
        logger.warning("Copying a change into SQLite failed, the mirror will: %s", describe(exc))


def remember_write(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    """Queue a synced row written on PostgreSQL for copying when its transaction commits."""
    if using != POSTGRES or not isinstance(instance, SyncedModel) or _suppressed.get():
        return
    connection = connections[POSTGRES]
    if not connection.in_atomic_block:
        copy_after_request({instance._meta.label_lower: {instance.uid}})
        return
    batch: Batch | None = getattr(connection, "_kindler_writethrough", None)
    # A rolled-back transaction drops its on_commit callbacks: start a new
    # batch unless this transaction's flush is still registered.
    registered = [entry[1] for entry in connection.run_on_commit]
    if batch is None or batch.flush not in registered:
        batch = Batch()
        connection._kindler_writethrough = batch  # type: ignore[attr-defined]
        transaction.on_commit(batch.flush, using=POSTGRES, robust=True)
    batch.add(instance)
