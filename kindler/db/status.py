"""The database status of this instance: read once, shown everywhere.

database_status() makes every read (the failover state, the journal, the
conflicts, the last replay and mirror runs, the switch history) and returns
one DatabaseStatus. The banner, /api/health, /api/metrics, `dbstatus` and the
System page all render that one value instead of reading on their own.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections
from prometheus_client import CollectorRegistry

from kindler import __version__
from kindler.db import POSTGRES, SQLITE, telemetry
from kindler.db.failover import schema
from kindler.db.failover.monitor import Probe, Snapshot, monitor
from kindler.db.failover.pinning import sqlite_fallback_enabled
from kindler.db.models import SyncRun
from kindler.db.samples import append_line, read_lines
from kindler.db.sync import conflicts, identity, journal, patroni, runs
from kindler.db.sync.identity import Node


@dataclass(frozen=True)
class SyncStatus:
    """What waits to be carried between the databases, and how the last runs went."""

    # None when the SQLite journal could not be read.
    pending: int | None
    oldest_pending: str | None
    # None while PostgreSQL, which holds the conflicts, is not the active database.
    open_conflicts: int | None
    last_replay: SyncRun | None
    last_mirror: SyncRun | None
    mirror_lag_seconds: float | None
    # Replay and mirror runs, newest first: what each pushed, pulled, deleted
    # and restored, not only the last of each kind.
    recent_runs: tuple[SyncRun, ...] = ()

    @property
    def replay_failure(self) -> str | None:
        """Return why the last replay stopped, if it did."""
        run = self.last_replay
        return run.result if run is not None and not run.ok else None

    def as_json(self) -> dict[str, Any]:
        """Return the sync figures as JSON data (database.sync in /api/health)."""
        last_mirror = runs.as_json(self.last_mirror)
        if last_mirror is not None:
            last_mirror["lag_seconds"] = self.mirror_lag_seconds
        return {
            "journal": {"pending": self.pending, "oldest": self.oldest_pending},
            "open_conflicts": self.open_conflicts,
            "last_replay": runs.as_json(self.last_replay),
            "last_mirror": last_mirror,
            "mirror_lag_seconds": self.mirror_lag_seconds,
        }


RECENT_RUNS = 10


@dataclass(frozen=True)
class DatabaseStatus:
    """The instance's database state, with the sync figures and switch history."""

    failover: Snapshot
    # None when PostgreSQL is not configured, or in PostgreSQL-only mode:
    # there is nothing to carry.
    sync: SyncStatus | None
    switches: list[dict[str, Any]]
    # "sqlite", or "off" in PostgreSQL-only mode (KINDLER_FALLBACK).
    fallback: str = "sqlite"
    # The PostgreSQL node writes go to, as the last check of PostgreSQL found it
    # (None before the first one, or with no SQLite file to remember it).
    node: Node | None = None
    # The schema version the database Kindler writes to records (kindler_schema).
    schema: str | None = None

    @property
    def active(self) -> str | None:
        """Return the alias queries go to now (None when no database can be used)."""
        return self.failover.active

    @property
    def probe(self) -> Probe | None:
        """Return what the last probe of PostgreSQL found, if it was probed."""
        return self.failover.probe

    @property
    def degraded(self) -> bool:
        """Return True when PostgreSQL is configured but SQLite serves in its place."""
        return self.failover.configured and self.failover.active == SQLITE

    @property
    def unavailable(self) -> bool:
        """Return True when no database can be used (PostgreSQL-only mode, PostgreSQL down)."""
        return self.failover.configured and self.failover.active is None

    @property
    def upgrade_required(self) -> bool:
        """Return True when PostgreSQL holds a schema newer than this code."""
        probe = self.failover.probe
        return probe is not None and probe.upgrade_required

    @property
    def health(self) -> str:
        """Return healthy, degraded (on SQLite), upgrade required, or unhealthy."""
        if self.unavailable:
            return "unhealthy"
        if self.upgrade_required:
            return "upgrade required"
        return "degraded" if self.degraded else "healthy"

    @property
    def host(self) -> str | None:
        """Return the listed PostgreSQL server that takes writes, as the last probe found."""
        probe = self.failover.probe
        return probe.host if probe is not None else None

    def as_json(self) -> dict[str, Any]:
        """Return the status as JSON data, in the shape /api/health has always had."""
        snapshot, probe = self.failover, self.failover.probe
        return {
            "active": snapshot.active,
            "state": str(snapshot.state),
            "state_cause": snapshot.cause,
            "since": snapshot.since.isoformat(),
            "fallback": self.fallback,
            "postgres": {
                "configured": snapshot.configured,
                "reachable": bool(probe and probe.reachable),
                "usable": bool(probe and probe.usable),
                "latency_ms": probe.latency_ms if probe else None,
                "error": probe.error if probe else None,
                "host": self.host,
                "hosts": self.hosts_as_json(),
                "node": self.node.as_json() if self.node is not None else None,
            },
            "sync": self.sync.as_json() if self.sync is not None else None,
            "schema": {
                "code": __version__,
                "database": self.schema,
                "upgrade_required": self.upgrade_required,
            },
        }

    def hosts_as_json(self) -> list[dict[str, Any]]:
        """Return each listed PostgreSQL server with its role, as the last probe found them."""
        probe = self.failover.probe
        if probe is None:
            return []
        return [
            {
                "address": host.address,
                "role": str(host.role),
                "active": host.address == probe.host,
                "latency_ms": host.latency_ms,
                "error": host.error,
            }
            for host in probe.hosts
        ]

    def connections(self) -> list[ProcessConnections]:
        """Return each live process's PostgreSQL connections (read when called)."""
        return process_connections() if self.failover.configured else []

    def connections_as_json(self) -> list[dict[str, Any]]:
        """Return each live process's PostgreSQL connections as JSON data."""
        return [row.as_json() for row in self.connections()]

    def switches_as_json(self) -> list[dict[str, Any]]:
        """Return the switch history as JSON data, newest first."""
        return [{**entry, "at": entry["at"].isoformat()} for entry in self.switches]


def database_status(snapshot: Snapshot | None = None) -> DatabaseStatus:
    """Read the database status of this instance (from snapshot when given one)."""
    snapshot = snapshot or monitor.snapshot()
    with_sqlite = sqlite_fallback_enabled()
    return DatabaseStatus(
        failover=snapshot,
        # PostgreSQL-only mode never opens the SQLite file, not even to read its journal.
        sync=sync_status(snapshot) if snapshot.configured and with_sqlite else None,
        switches=telemetry.switch_history(),
        fallback="sqlite" if with_sqlite else "off",
        node=patroni.named(identity.primary_node())
        if snapshot.configured and with_sqlite
        else None,
        schema=_schema_version(snapshot),
    )


def _schema_version(snapshot: Snapshot) -> str | None:
    if snapshot.configured:
        return snapshot.probe.schema if snapshot.probe is not None else None
    # The embedded SQLite file is the database: it records its own.
    with contextlib.suppress(DatabaseError):
        return schema.recorded_version(SQLITE)
    return None


def sync_status(snapshot: Snapshot) -> SyncStatus:
    """Read the journal, the open conflicts and the last replay and mirror runs."""
    try:
        pending, oldest = journal.pending(), journal.oldest_pending()
    except DatabaseError:
        pending, oldest = None, None
    last_mirror = runs.last(runs.MIRROR)
    return SyncStatus(
        pending=pending,
        oldest_pending=oldest,
        open_conflicts=_open_conflicts(snapshot),
        last_replay=runs.last(runs.REPLAY),
        last_mirror=last_mirror,
        mirror_lag_seconds=_lag_seconds(last_mirror),
        recent_runs=tuple(runs.history(RECENT_RUNS)),
    )


def _open_conflicts(snapshot: Snapshot) -> int | None:
    if not snapshot.configured or snapshot.active != POSTGRES:
        return None
    try:
        return conflicts.open_conflicts()
    except DatabaseError:
        return None


def _lag_seconds(run: SyncRun | None) -> float | None:
    if run is None or run.last_success_at is None:
        return None
    return round((datetime.now(UTC) - run.last_success_at).total_seconds(), 3)


@dataclass(frozen=True)
class ProcessConnections:
    """One process's PostgreSQL connections: its pool for one alias, and its probe connections."""

    alias: str
    pid: int
    open: int
    in_use: int
    idle: int
    waiting: int
    minimum: int
    maximum: int
    waits: int
    wait_seconds: float
    timeouts: int
    opened: int
    closed: int
    probes_open: int
    probes_opened: int

    def as_json(self) -> dict[str, Any]:
        """Return the figures as JSON data."""
        return {**asdict(self), "wait_seconds": round(self.wait_seconds, 3)}


def process_connections(registry: CollectorRegistry | None = None) -> list[ProcessConnections]:
    """Read every live process's pool and probe figures (web server workers one by one)."""
    here = str(os.getpid())
    gauges: dict[tuple[str, str], dict[str, float]] = {}
    counters: dict[tuple[str, str], dict[str, float]] = {}
    probes_open: dict[str, float] = {}
    probes_opened: dict[str, float] = {}
    for metric in (registry or telemetry.collector_registry()).collect():
        for sample in metric.samples:
            labels = sample.labels
            pid = labels.get("pid", here)
            if sample.name == "kindler_db_pool_connections":
                gauges.setdefault((labels["alias"], pid), {})[labels["state"]] = sample.value
            elif sample.name == "kindler_db_pool_limit":
                gauges.setdefault((labels["alias"], pid), {})[labels["bound"]] = sample.value
            elif sample.name == "kindler_db_pool_events_total":
                counters.setdefault((labels["alias"], pid), {})[labels["event"]] = sample.value
            elif sample.name == "kindler_db_pool_wait_seconds_total":
                counters.setdefault((labels["alias"], pid), {})["wait_seconds"] = sample.value
            elif sample.name == "kindler_db_probe_connections_open":
                probes_open[pid] = sample.value
            elif sample.name == "kindler_db_probe_connections_opened_total":
                probes_opened[pid] = sample.value
    # Live processes only: gauges of a finished web server worker are removed
    # (kindler.multiprocess.forget_dead_workers), its counters are not.
    keys = set(gauges) | {(POSTGRES, pid) for pid in probes_open}
    figures = []
    for alias, pid in sorted(keys, key=lambda key: (key[0], int(key[1]))):
        g, c = gauges.get((alias, pid), {}), counters.get((alias, pid), {})
        with_probes = alias == POSTGRES
        figures.append(
            ProcessConnections(
                alias=alias,
                pid=int(pid),
                open=int(g.get("open", 0)),
                in_use=int(g.get("in_use", 0)),
                idle=int(g.get("idle", 0)),
                waiting=int(g.get("waiting", 0)),
                minimum=int(g.get("min", 0)),
                maximum=int(g.get("max", 0)),
                waits=int(c.get("waits", 0)),
                wait_seconds=c.get("wait_seconds", 0.0),
                timeouts=int(c.get("timeouts", 0)),
                opened=int(c.get("opened", 0)),
                closed=int(c.get("closed", 0)),
                probes_open=int(probes_open.get(pid, 0)) if with_probes else 0,
                probes_opened=int(probes_opened.get(pid, 0)) if with_probes else 0,
            )
        )
    return figures


@dataclass(frozen=True)
class ConnectionBudget:
    """How many PostgreSQL connections the configured Kindler instances may open, against
    what the server allows."""

    instances: int
    processes: int
    per_process: int
    pooled: bool
    max_connections: int | None
    reserved: int | None

    @property
    def total(self) -> int:
        """Return the most connections every instance together may open (one probe each)."""
        return self.instances * (self.processes * self.per_process + 1)

    @property
    def available(self) -> int | None:
        """Return the connections PostgreSQL gives to ordinary roles, if known."""
        if self.max_connections is None:
            return None
        return self.max_connections - (self.reserved or 0)

    @property
    def warning(self) -> str | None:
        """Return what to change when the configured total exceeds the server's slots."""
        available = self.available
        if available is None or self.total <= available:
            return None
        return (
            f"{self.instances} instance(s) x ({self.processes} processes x "
            f"{self.per_process} connections + 1 probe) = {self.total} connections, more than "
            f"PostgreSQL's {available} (max_connections {self.max_connections} minus "
            f"{self.reserved} reserved): lower PG_POOL_MAX, put PgBouncer in front, or raise "
            "max_connections"
        )

    def as_json(self) -> dict[str, Any]:
        """Return the budget as JSON data."""
        return {
            **asdict(self),
            "total": self.total,
            "available": self.available,
            "warning": self.warning,
        }


def connection_budget(snapshot: Snapshot) -> ConnectionBudget | None:
    """Size the configured connections against PostgreSQL's max_connections (None without it)."""
    if not snapshot.configured:
        return None
    pool = settings.DATABASES[POSTGRES].get("POOL") or {}
    pooled = int(pool.get("MAX", 0)) > 0
    # Without the pool, each thread keeps a connection: the web threads plus
    # the health and mirror threads.
    per_process = int(pool["MAX"]) if pooled else int(settings.KINDLER_THREADS) + 2
    max_connections = reserved = None
    if snapshot.active == POSTGRES:
        with contextlib.suppress(DatabaseError), connections[POSTGRES].cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('max_connections')::int, "
                "current_setting('superuser_reserved_connections')::int "
                "+ coalesce(current_setting('reserved_connections', true)::int, 0)"
            )
            max_connections, reserved = cursor.fetchone()
    return ConnectionBudget(
        instances=int(settings.KINDLER_INSTANCES),
        # The web workers, the reconciler and the WebSocket server.
        processes=int(settings.KINDLER_WORKERS) + 1 + int(settings.KINDLER_WS_PROCESSES),
        per_process=per_process,
        pooled=pooled,
        max_connections=max_connections,
        reserved=reserved,
    )


# The System page's chart: one instance-wide sample every HISTORY_EVERY
# seconds, the last HISTORY_SAMPLES kept (an hour).
HISTORY_EVERY = 10.0
HISTORY_SAMPLES = 360
_last_sample = 0.0


def connection_history_path() -> Path:
    """Return the file the leading process appends the instance's connection samples to."""
    return Path(f"{settings.DATABASES[SQLITE]['NAME']}.connections")


def record_connections(sender: Any = None, force: bool = False, **kwargs: Any) -> None:
    """Append the instance's open and in-use PostgreSQL connections (a `probed` receiver)."""
    global _last_sample
    now = time.monotonic()
    if not force and now - _last_sample < HISTORY_EVERY:
        return
    _last_sample = now
    rows = [row for row in process_connections() if row.alias == POSTGRES]
    sample = {
        "at": datetime.now(UTC).isoformat(),
        "open": sum(row.open + row.probes_open for row in rows),
        "in_use": sum(row.in_use for row in rows),
        "waiting": sum(row.waiting for row in rows),
        "processes": len(rows),
    }
    try:
        append_line(connection_history_path(), sample, HISTORY_SAMPLES)
    except OSError:
        return  # A chart with a gap is not worth failing the health monitor.


def connection_history() -> list[dict[str, Any]]:
    """Return the instance's connection samples, oldest first."""
    return read_lines(connection_history_path())[-HISTORY_SAMPLES:]


@dataclass(frozen=True)
class ConnectionChart:
    """Open and in-use connections over time, as SVG polyline points."""

    width: int
    height: int
    peak: int
    open_points: str
    in_use_points: str
    first: datetime | None
    last: datetime | None
    samples: int


def connection_chart(
    samples: list[dict[str, Any]], width: int = 600, height: int = 120
) -> ConnectionChart:
    """Scale the samples into a width x height chart, time left to right."""
    peak = max([1, *(int(s["open"]) for s in samples)])
    step = width / max(len(samples) - 1, 1)

    def points(key: str) -> str:
        return " ".join(
            f"{i * step:.1f},{height - int(s[key]) * height / peak:.1f}"
            for i, s in enumerate(samples)
        )

    return ConnectionChart(
        width=width,
        height=height,
        peak=peak,
        open_points=points("open"),
        in_use_points=points("in_use"),
        first=samples[0]["at"] if samples else None,
        last=samples[-1]["at"] if samples else None,
        samples=len(samples),
    )


def connections_context(status: DatabaseStatus) -> dict[str, Any]:
    """Return what the System page shows of PostgreSQL connections."""
    return {
        "processes": status.connections(),
        "budget": connection_budget(status.failover),
        "chart": connection_chart(connection_history()),
    }
