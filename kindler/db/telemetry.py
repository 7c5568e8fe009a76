"""Per-alias query statistics, the slow-query log and the database switch history.

Figures are prometheus-client metrics. Every web server worker writes its own
into KINDLER_METRICS_DIR (prometheus-client's multiprocess mode, set up by
kindler.webserver) and readers add them up, so /api/metrics, the System page
and `dbstatus` show the whole web server, not one worker.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from kindler import multiprocess
from kindler.db import POSTGRES, SQLITE, files
from kindler.db.failover.monitor import Snapshot
from kindler.db.failover.pinning import sqlite_fallback_enabled
from kindler.db.failover.state import HostMove, Transition
from kindler.db.sync.identity import NodeChange

slow_logger = logging.getLogger("kindler.db.slow")

SQL_LOG_LIMIT = 2000
SWITCH_HISTORY = 50
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

QUERIES = Histogram(
    "kindler_db_query_duration_seconds",
    "Time spent in database queries, per alias.",
    ["alias"],
    buckets=QUERY_BUCKETS,
)
QUERY_ERRORS = Counter(
    "kindler_db_query_errors", "Database queries that raised an error, per alias.", ["alias"]
)
SLOW_QUERIES = Counter(
    "kindler_db_slow_queries", "Queries slower than KINDLER_SLOW_QUERY_MS, per alias.", ["alias"]
)
QUERY_MAX = Gauge(
    "kindler_db_query_max_seconds",
    "The slowest query seen since the process started, per alias.",
    ["alias"],
    multiprocess_mode="max",
)
SWITCHES = Counter(
    "kindler_database_switches",
    "Database state changes (primary, fallback, recovering), by source and target.",
    ["source", "target"],
)
HOST_MOVES = Counter(
    "kindler_postgres_host_moves",
    "Times the PostgreSQL server taking writes changed to another listed one.",
)

_max_lock = threading.Lock()
_max_seconds: dict[str, float] = {}


class QueryObserver:
    """An execute_wrapper that times every query of one connection."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        except Exception:
            QUERY_ERRORS.labels(self.alias).inc()
            raise
        finally:
            record_query(self.alias, sql, time.perf_counter() - started)


def record_query(alias: str, sql: str, seconds: float) -> None:
    """Count one query and log it when it was slow."""
    QUERIES.labels(alias).observe(seconds)
    with _max_lock:
        if seconds > _max_seconds.get(alias, 0.0):
            _max_seconds[alias] = seconds
            QUERY_MAX.labels(alias).set(seconds)
    milliseconds = seconds * 1000
    if milliseconds >= settings.KINDLER_SLOW_QUERY_MS:
        SLOW_QUERIES.labels(alias).inc()
        # The SQL only: parameters can hold passwords, tokens or personal data.
        text = " ".join(str(sql).split())
        if len(text) > SQL_LOG_LIMIT:
            text = text[:SQL_LOG_LIMIT] + " ..."
        slow_logger.warning("Slow query on %s (%.1f ms): %s", alias, milliseconds, text)


def observe_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Install the QueryObserver on a new connection (connection_created signal)."""
    # The wrapper list belongs to the DatabaseWrapper and outlives reconnects.
    if not any(isinstance(wrapper, QueryObserver) for wrapper in connection.execute_wrappers):
        connection.execute_wrappers.append(QueryObserver(connection.alias))


@dataclass(frozen=True)
class AliasStats:
    alias: str
    count: int
    errors: int
    slow: int
    total_ms: float
    max_ms: float

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0


# How often a read of the workers' files is tried while files vanish under it.
ATTEMPTS = 3


class WorkersCollector(MultiProcessCollector):
    """prometheus-client's multiprocess collector, for files made and removed as it reads.

    A worker makes its file empty and sizes it only after (prometheus/client_python
    issue 1199), and the files of a worker that is gone are removed as figures are
    read (multiprocess.forget_dead_workers, by any process): prometheus-client's own
    collector raised on either, and health, /api/metrics and the System page
    answered 500 while a worker started or after one died. An empty file holds
    nothing yet; a file gone since it was listed is listed again.
    """

    def collect(self) -> Iterable[Any]:
        for _ in range(ATTEMPTS - 1):
            try:
                return self.merge(multiprocess.metrics_files(Path(self._path)), accumulate=True)
            except FileNotFoundError:
                continue
        return self.merge(multiprocess.metrics_files(Path(self._path)), accumulate=True)


def collector_registry() -> CollectorRegistry:
    """Return a registry holding this server's metrics, workers added up."""
    if os.environ.get(multiprocess.ENV):
        multiprocess.forget_dead_workers(multiprocess.metrics_dir())
        registry = CollectorRegistry()
        WorkersCollector(registry)
        return registry
    path = multiprocess.metrics_dir()
    if path.is_dir() and any(path.glob("*.db")):
        # A command (dbstatus) reading what the running web server recorded.
        registry = CollectorRegistry()
        WorkersCollector(registry, path=str(path))
        return registry
    return REGISTRY


def query_stats(registry: CollectorRegistry | None = None) -> list[AliasStats]:
    """Return count, errors, slow, total and max query time per alias."""
    values: dict[tuple[str, str], float] = {}
    for metric in (registry or collector_registry()).collect():
        for sample in metric.samples:
            alias = sample.labels.get("alias")
            if alias is not None and sample.name.startswith("kindler_db_"):
                key = (sample.name, alias)
                values[key] = max(values.get(key, 0.0), sample.value)
    aliases = sorted({alias for _, alias in values})
    return [
        AliasStats(
            alias=alias,
            count=int(values.get(("kindler_db_query_duration_seconds_count", alias), 0)),
            errors=int(values.get(("kindler_db_query_errors_total", alias), 0)),
            slow=int(values.get(("kindler_db_slow_queries_total", alias), 0)),
            total_ms=values.get(("kindler_db_query_duration_seconds_sum", alias), 0.0) * 1000,
            max_ms=values.get(("kindler_db_query_max_seconds", alias), 0.0) * 1000,
        )
        for alias in aliases
    ]


def history_path() -> Path:
    """Return the file every process of this instance appends its switches to."""
    return Path(f"{settings.DATABASES['sqlite']['NAME']}.switches")


def record_switch(sender: Any, transition: Transition, **kwargs: Any) -> None:
    """Count a database switch and append it to the shared history file."""
    SWITCHES.labels(str(transition.source), str(transition.target)).inc()
    _append_history(
        {
            "at": transition.at.isoformat(),
            "source": str(transition.source),
            "target": str(transition.target),
            "cause": transition.cause,
            "seconds_in_source": round(transition.seconds_in_source, 3),
            "pid": os.getpid(),
        }
    )


def record_host_change(sender: Any, move: HostMove, **kwargs: Any) -> None:
    """Count a move of the primary to another listed server and add it to the switch history.

    The state stays what it was (source and target are both that state); the
    cause names the two servers.
    """
    HOST_MOVES.inc()
    _append_history(
        {
            "at": move.at.isoformat(),
            "source": str(move.state),
            "target": str(move.state),
            "cause": move.cause,
            "seconds_in_source": round(move.seconds_on_source, 3),
            "pid": os.getpid(),
            "host": {"source": move.source, "target": move.target},
        }
    )


def record_primary_change(sender: Any, change: NodeChange, **kwargs: Any) -> None:
    """Add a change of PostgreSQL's primary node (seen through any proxy) to the switch history."""
    _append_history(
        {
            "at": change.at.isoformat(),
            "source": "primary",
            "target": "primary",
            "cause": change.cause,
            "seconds_in_source": 0.0,
            "pid": os.getpid(),
            "node": {"source": str(change.source), "target": str(change.target)},
        }
    )


def _append_history(entry: dict[str, Any]) -> None:
    line = json.dumps(entry)
    path = history_path()
    try:
        # One short O_APPEND write per line: processes never interleave.
        files.append_line(path, line + "\n")
        if path.stat().st_size > 256 * 1024:
            _trim(path)
    except OSError as exc:
        slow_logger.warning("Cannot record the database switch in %s: %s", path, exc.strerror)


def _trim(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()[-SWITCH_HISTORY:]
    files.replace_text(path, "".join(line + "\n" for line in lines))


def switch_history(limit: int = SWITCH_HISTORY) -> list[dict[str, Any]]:
    """Return the last switches of every process of this instance, newest first."""
    try:
        lines = history_path().read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    entries = list(_parse(lines))
    entries.sort(key=lambda entry: entry["at"], reverse=True)
    return entries[:limit]


def _parse(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    for line in lines:
        try:
            entry = json.loads(line)
            entry["at"] = datetime.fromisoformat(entry["at"])
        except (ValueError, KeyError, TypeError):
            continue  # A line cut short by a crash is not worth failing a status page.
        yield entry


def connection_states(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Return, per alias, whether it answers and what Kindler holds open on it."""
    states = []
    if snapshot.configured:
        probe = snapshot.probe
        postgres: dict[str, Any] = {
            "alias": POSTGRES,
            "active": snapshot.active == POSTGRES,
            "state": "up" if probe and probe.reachable else "down",
            "host": probe.host if probe else None,
            "latency_ms": probe.latency_ms if probe else None,
            "error": probe.error if probe else None,
            "server_connections": None,
        }
        if probe and probe.reachable:
            postgres["server_connections"] = _server_connections()
        states.append(postgres)
    sqlite_path = Path(settings.DATABASES[SQLITE]["NAME"])
    wal = Path(f"{sqlite_path}-wal")
    if not sqlite_fallback_enabled():
        state = "unused (KINDLER_FALLBACK=off)"
    else:
        state = "up" if sqlite_path.exists() else "missing"
    states.append(
        {
            "alias": SQLITE,
            "active": snapshot.active == SQLITE,
            "state": state,
            "path": str(sqlite_path),
            "size_bytes": sqlite_path.stat().st_size if sqlite_path.exists() else 0,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        }
    )
    return states


def _server_connections() -> int | None:
    # Every Kindler process names its connections kindler or kindler-health.
    try:
        with connections[POSTGRES].cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                ["kindler%"],
            )
            return int(cursor.fetchone()[0])
    except DatabaseError:
        return None


def report(snapshot: Snapshot) -> dict[str, Any]:
    """Return query statistics and connections as plain JSON data."""
    registry = collector_registry()
    return {
        "queries_source": "this process" if registry is REGISTRY else "web server",
        "queries": [
            {
                "alias": item.alias,
                "count": item.count,
                "errors": item.errors,
                "slow": item.slow,
                "total_ms": round(item.total_ms, 3),
                "mean_ms": round(item.mean_ms, 3),
                "max_ms": round(item.max_ms, 3),
            }
            for item in query_stats(registry)
        ],
        "slow_query_ms": settings.KINDLER_SLOW_QUERY_MS,
        "connections": connection_states(snapshot),
    }


def report_lines(data: dict[str, Any]) -> list[str]:
    """Return report() and the switch history as aligned text lines for the terminal."""
    lines = [f"Queries ({data['queries_source']}, slow above {data['slow_query_ms']:g} ms):"]
    if not data["queries"]:
        lines.append("  none recorded")
    for q in data["queries"]:
        lines.append(
            f"  {q['alias']:<9} {q['count']} queries, {q['errors']} failed, {q['slow']} slow, "
            f"total {q['total_ms']:.1f} ms, mean {q['mean_ms']:.2f} ms, max {q['max_ms']:.1f} ms"
        )
    lines.append("Connections:")
    for c in data["connections"]:
        marker = " (active)" if c["active"] else ""
        if c["alias"] == SQLITE:
            detail = f"{c['path']}, {c['size_bytes']} bytes, WAL {c['wal_bytes']} bytes"
        elif c["state"] == "up" and c["latency_ms"] is not None:
            held = c["server_connections"]
            on = f" on {c['host']}" if c.get("host") else ""
            detail = f"{c['latency_ms']:.1f} ms{on}" + (
                "" if held is None else f", {held} Kindler connections on the server"
            )
        else:
            detail = c["error"] or "not probed yet"
        lines.append(f"  {c['alias']:<9} {c['state']}{marker}: {detail}")
    lines.append(f"Switches (newest first, last {SWITCH_HISTORY}):")
    if not data["switches"]:
        lines.append("  none")
    for s in data["switches"]:
        if "host" in s:
            lines.append(
                f"  {s['at']}  {s['source']}: {s['cause']} after "
                f"{s['seconds_in_source']:.1f} s on {s['host']['source']}"
            )
            continue
        lines.append(
            f"  {s['at']}  {s['source']} -> {s['target']} after "
            f"{s['seconds_in_source']:.1f} s: {s['cause']}"
        )
    return lines
