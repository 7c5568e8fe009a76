"""The last replay and mirror run of this instance, for status pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError

from kindler.db import SQLITE
from kindler.db.errors import describe as describe_error
from kindler.db.models import SyncRun

REPLAY = "replay"
MIRROR = "mirror"


def record(
    kind: str, *, ok: bool, result: str, duration_ms: float, mark: str | None = None
) -> None:
    """Store the outcome of a run in SQLite (kept until the next run)."""
    now = datetime.now(UTC)
    defaults: dict[str, Any] = {
        "finished_at": now,
        "ok": ok,
        "result": result,
        "duration_ms": round(duration_ms, 2),
    }
    if ok:
        defaults["last_success_at"] = now
    if mark is not None:
        defaults["mark"] = mark
    SyncRun.objects.using(SQLITE).update_or_create(kind=kind, defaults=defaults)


@dataclass
class Outcome:
    """What a run in a recorded() block reports; no summary means nothing to store."""

    summary: str | None = None
    mark: str | None = None


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
            mark=outcome.mark,
        )


def last(kind: str) -> SyncRun | None:
    """Return the last run of kind, or None when there was none (or no table yet)."""
    try:
        return SyncRun.objects.using(SQLITE).filter(kind=kind).first()
    except DatabaseError:
        return None


def describe(run: SyncRun | None) -> dict[str, Any] | None:
    """Return a run as JSON data."""
    if run is None:
        return None
    return {
        "at": run.finished_at.isoformat(),
        "ok": run.ok,
        "result": run.result,
        "duration_ms": run.duration_ms,
    }
