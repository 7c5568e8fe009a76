"""A small, bounded record of the database over time, for the System page's charts.

The leading health monitor of an instance sends `probed` after every probe;
at most once every KINDLER_SAMPLE_INTERVAL seconds this appends one JSON line
(time, state, PostgreSQL latency, journal length) to a file beside the
SQLite file. The file keeps the last SAMPLE_LIMIT lines, a day at the default
interval. Another figure is one more key in the line: readers skip what
they do not know.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from kindler.db import files
from kindler.db.failover import state
from kindler.db.failover.monitor import Probe
from kindler.db.failover.pinning import sqlite_fallback_enabled
from kindler.db.sync import journal

logger = logging.getLogger("kindler.db")

SAMPLE_LIMIT = 1500
_lock = threading.Lock()
_last: dict[str, float] = {}


def samples_path() -> Path:
    """Return the file this instance's samples go to."""
    return Path(f"{settings.DATABASES['sqlite']['NAME']}.samples")


def record_probe(sender: Any, probe: Probe, **kwargs: Any) -> None:
    """Append a sample for this probe unless one was taken less than an interval ago."""
    path = samples_path()
    now = time.monotonic()
    with _lock:
        last = _last.get(str(path))
        if last is not None and now - last < float(settings.KINDLER_SAMPLE_INTERVAL):
            return
        _last[str(path)] = now
    shared = state.read()
    append(
        {
            "at": probe.at.isoformat(),
            "state": str(shared.state) if shared else None,
            "latency_ms": round(probe.latency_ms, 3) if probe.usable and probe.latency_ms else None,
            "journal": journal_length(),
        }
    )


def journal_length() -> int | None:
    """Return how many changes wait to be replayed (None without a SQLite fallback)."""
    if not sqlite_fallback_enabled():
        return None
    try:
        return journal.pending()
    except Exception:  # the monitor's thread runs this and must go on
        return None


def append(sample: dict[str, Any]) -> None:
    """Add one sample line, keeping the file to its last SAMPLE_LIMIT lines."""
    path = samples_path()
    try:
        append_line(path, sample, SAMPLE_LIMIT)
    except OSError as exc:
        logger.warning("Cannot record a database sample in %s: %s", path, exc.strerror)


def append_line(path: Path, sample: dict[str, Any], keep: int) -> None:
    """Append sample to a JSON-lines file, cut back to its last `keep` lines now and then.

    One short O_APPEND write per line, so writers never interleave; the cut
    rewrites a copy and renames it over the file once it holds about twice
    `keep` lines' worth.
    """
    line = json.dumps(sample) + "\n"
    files.append_line(path, line)
    if path.stat().st_size > keep * 2 * len(line):
        lines = path.read_text(encoding="utf-8").splitlines()[-keep:]
        files.replace_text(path, "".join(kept + "\n" for kept in lines))


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Return the samples of a JSON-lines file in file order, times aware; [] without one."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            sample = json.loads(line)
            sample["at"] = datetime.fromisoformat(sample["at"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
        found.append(sample)
    return found


def samples(since: timedelta = timedelta(hours=24)) -> list[dict[str, Any]]:
    """Return the samples of the last `since` until now, oldest first, times aware."""
    found = read_lines(samples_path())
    cutoff = timezone.now() - since
    return sorted((s for s in found if s["at"] >= cutoff), key=lambda sample: sample["at"])
