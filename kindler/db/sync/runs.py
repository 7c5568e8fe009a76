"""The replay and mirror runs of this instance, for status pages (the last 100 of each kind)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError, transaction

from kindler.db import SQLITE
from kindler.db.failover.errors import describe_error
from kindler.db.models import SyncRun

REPLAY = "replay"
MIRROR = "mirror"
KEPT = 100


def record(kind: str, *, ok: bool, result: str, duration_ms: float) -> None:
    """Store the outcome of a run in SQLite; runs of kind beyond the last KEPT go."""
    now = datetime.now(UTC)
    previous = last(kind)
    runs = SyncRun.objects.using(SQLITE)
    with transaction.atomic(using=SQLITE):
        runs.create(
            kind=kind,
            finished_at=now,
            ok=ok,
            result=result,
            duration_ms=round(duration_ms, 2),
            last_success_at=now if ok else (previous.last_success_at if previous else None),
        )
        oldest_kept = (
            runs.filter(kind=kind).order_by("-id").values_list("id", flat=True)[KEPT - 1 : KEPT]
        )
        if oldest_kept:
            runs.filter(kind=kind, id__lt=oldest_kept[0]).delete()


@dataclass
class Outcome:
    """What a run in a recorded() block reports; no summary means nothing to store."""

    summary: str | None = None


@contextmanager
def recorded(kind: str, dry_run: bool) -> Iterator[Outcome]:
    """Time the run in the block and store how it ended (never for a dry run)."""
    started = time.monotonic()
    outcome = Outcome()
    try:
        yield outcome
    except Exception as exc:
        if not dry_run:
            record(
                kind,
                ok=False,
                result=f"failed: {describe_error(exc)}",
                duration_ms=(time.monotonic() - started) * 1000,
            )
        raise
    if not dry_run and outcome.summary is not None:
        record(
            kind,
            ok=True,
            result=outcome.summary,
            duration_ms=(time.monotonic() - started) * 1000,
        )


def last(kind: str) -> SyncRun | None:
    """Return the last run of kind, or None when there was none (or no table yet)."""
    try:
        return SyncRun.objects.using(SQLITE).filter(kind=kind).order_by("-id").first()
    except DatabaseError:
        return None


def history(limit: int = 20) -> list[SyncRun]:
    """Return the most recent runs of every kind, newest first."""
    try:
        return list(SyncRun.objects.using(SQLITE).order_by("-id")[:limit])
    except DatabaseError:
        return []


def as_json(run: SyncRun | None) -> dict[str, Any] | None:
    """Return a run as JSON data."""
    if run is None:
        return None
    return {
        "at": run.finished_at.isoformat(),
        "ok": run.ok,
        "result": run.result,
        "duration_ms": run.duration_ms,
    }
