"""Kindler's figures in the Prometheus text format (served at /api/metrics).

Counters and histograms (requests, query timings, switches) are kept by
prometheus-client in every process and added up across the web server's
workers (kindler.multiprocess). Figures that live in the databases (the database
status, and what apps register: the clusters app's operations by result) are
read when scraped, so every worker reports the same values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as render
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kindler.db import ALIASES, telemetry
from kindler.db.failover.monitor import Role
from kindler.db.failover.state import State
from kindler.db.status import DatabaseStatus, database_status

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter(
    "kindler_http_requests",
    "HTTP requests answered, by method and status code.",
    ["method", "code"],
)
REQUEST_DURATION = Histogram(
    "kindler_http_request_duration_seconds",
    "Time to answer an HTTP request, by method.",
    ["method"],
    buckets=REQUEST_BUCKETS,
)

# Collectors apps register (AppConfig.ready) for figures they read from their
# own tables when scraped. Never described at registration: that would query
# the databases while Django starts.
_app_collectors = CollectorRegistry(auto_describe=False)


class RequestMetricsMiddleware:
    """Count every request and time it, whatever answered it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        # A fixed label set: anything else a client sends is counted as OTHER.
        method = request.method if request.method in METHODS else "OTHER"
        REQUESTS.labels(method, str(response.status_code)).inc()
        REQUEST_DURATION.labels(method).observe(time.perf_counter() - started)
        return response


def register(collector: Collector) -> None:
    """Add an app's scrape-time figures to /api/metrics and the System page."""
    _app_collectors.register(collector)


@dataclass(frozen=True)
class Table:
    """One family of an app's counts, as the System page shows it."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[tuple[str, ...], float]]


def app_tables() -> list[Table]:
    """Read the apps' figures now, one table per family."""
    tables = []
    for family in _app_collectors.collect():
        columns = tuple(family.samples[0].labels) if family.samples else ()
        rows = [
            (tuple(sample.labels[name] for name in columns), sample.value)
            for sample in family.samples
        ]
        tables.append(Table(family.documentation.rstrip("."), columns, rows))
    return tables


def database_figures(status: DatabaseStatus) -> Iterator[Metric]:
    """Yield the database status as gauges."""
    snapshot = status.failover
    active = GaugeMetricFamily(
        "kindler_database_active", "1 for the alias queries go to now.", labels=["alias"]
    )
    for alias in ALIASES:
        active.add_metric([alias], 1.0 if snapshot.active == alias else 0.0)
    yield active
    state = GaugeMetricFamily(
        "kindler_database_state", "1 for the routing state now.", labels=["state"]
    )
    for each in State:
        state.add_metric([str(each)], 1.0 if snapshot.state is each else 0.0)
    yield state
    if not snapshot.configured:
        return
    probe = snapshot.probe
    yield GaugeMetricFamily(
        "kindler_postgres_up",
        "1 when the last health probe reached PostgreSQL.",
        value=1.0 if probe and probe.reachable else 0.0,
    )
    if probe and probe.hosts:
        roles = GaugeMetricFamily(
            "kindler_postgres_host_role",
            "1 for each listed PostgreSQL server's role in the last probe.",
            labels=["host", "role"],
        )
        active = GaugeMetricFamily(
            "kindler_postgres_host_active",
            "1 for the listed PostgreSQL server that takes Kindler's writes.",
            labels=["host"],
        )
        for host in probe.hosts:
            for role in Role:
                roles.add_metric([host.address, str(role)], 1.0 if host.role is role else 0.0)
            active.add_metric([host.address], 1.0 if host.address == probe.host else 0.0)
        yield roles
        yield active
    if probe and probe.latency_ms is not None:
        yield GaugeMetricFamily(
            "kindler_postgres_probe_seconds",
            "How long the last health probe took.",
            value=probe.latency_ms / 1000,
        )
    sync = status.sync
    if sync is None:
        return
    for name, help_text, value in (
        ("kindler_journal_entries", "Changes made on SQLite not yet replayed.", sync.pending),
        ("kindler_conflicts_open", "Replay conflicts waiting for a person.", sync.open_conflicts),
        (
            "kindler_mirror_lag_seconds",
            "How far SQLite's copy trails PostgreSQL.",
            sync.mirror_lag_seconds,
        ),
    ):
        # A figure that cannot be read now is left out rather than shown as 0.
        if value is not None:
            yield GaugeMetricFamily(name, help_text, value=float(value))


class ScrapeCollector(Collector):
    """Figures read when scraped: the database status and what the apps registered."""

    def collect(self) -> Iterator[Metric]:
        yield from database_figures(database_status())
        yield from _app_collectors.collect()


def exposition() -> bytes:
    """Return every Kindler metric in the Prometheus text format."""
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(ScrapeCollector())
    return render(telemetry.collector_registry()) + render(scraped)
