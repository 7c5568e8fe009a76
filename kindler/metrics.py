"""GET /api/metrics: Kindler's figures in the Prometheus text format.

Counters and histograms (requests, query timings, switches) are kept by
prometheus-client in every process and added up across gunicorn workers
(kindler.multiprocess). Figures that live in the databases (journal,
conflicts, mirror lag, operations by result) are read when scraped, so every
worker reports the same values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.db import DatabaseError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as render
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clusters.api import api_view
from kindler.db import ALIASES
from kindler.db import stats as db_stats
from kindler.db.health import State, monitor
from kindler.db.routing import postgres_configured

logger = logging.getLogger("kindler.metrics")

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


def journal_length() -> int:
    """Return how many SQLite changes wait to be replayed."""
    from kindler.db import journal

    return journal.pending()


def open_conflicts() -> int | None:
    """Return how many replay conflicts wait for a person, while PostgreSQL answers."""
    from kindler.db.status import open_conflicts as count

    return count(monitor.snapshot())


def mirror_lag_seconds() -> float | None:
    """Return how long ago SQLite's copy of PostgreSQL was last refreshed."""
    from kindler.db import mirror

    return mirror.lag_seconds()


def operations_by_result() -> list[tuple[str, str, int]]:
    """Return (operation, status, count) for every operation the reconciler ran."""
    from clusters.models import OperationLog

    rows = OperationLog.objects.values_list("operation", "status").annotate(n=Count("pk"))
    return sorted((str(operation), str(status), int(n)) for operation, status, n in rows)


class ScrapeCollector(Collector):
    """Figures read when scraped: routing state and what the databases hold."""

    def collect(self) -> Iterator[Metric]:
        yield from self._routing()
        yield from self._optional(
            "kindler_journal_entries", "Changes made on SQLite not yet replayed.", journal_length
        )
        yield from self._optional(
            "kindler_conflicts_open", "Replay conflicts waiting for a person.", open_conflicts
        )
        yield from self._optional(
            "kindler_mirror_lag_seconds",
            "How far SQLite's copy trails PostgreSQL.",
            mirror_lag_seconds,
        )
        yield from self._operations()

    def _routing(self) -> Iterable[Metric]:
        snapshot = monitor.snapshot()
        active = GaugeMetricFamily(
            "kindler_database_active", "1 for the alias queries go to now.", labels=["alias"]
        )
        for alias in ALIASES:
            active.add_metric([alias], 1.0 if snapshot.active == alias else 0.0)
        state = GaugeMetricFamily(
            "kindler_database_state", "1 for the routing state now.", labels=["state"]
        )
        for name in State:
            state.add_metric([str(name)], 1.0 if snapshot.state is name else 0.0)
        yield from (active, state)
        if postgres_configured():
            probe = snapshot.probe
            yield GaugeMetricFamily(
                "kindler_postgres_up",
                "1 when the last health probe reached PostgreSQL.",
                value=1.0 if probe and probe.reachable else 0.0,
            )
            if probe and probe.latency_ms is not None:
                yield GaugeMetricFamily(
                    "kindler_postgres_probe_seconds",
                    "How long the last health probe took.",
                    value=probe.latency_ms / 1000,
                )

    def _optional(self, name: str, help_text: str, read: Callable[[], Any]) -> Iterable[Metric]:
        try:
            value = read()
        except DatabaseError as exc:
            logger.info("Metric %s unavailable: %s", name, exc)
            return
        if value is not None:
            yield GaugeMetricFamily(name, help_text, value=float(value))

    def _operations(self) -> Iterable[Metric]:
        try:
            rows = operations_by_result()
        except DatabaseError as exc:
            logger.info("Metric kindler_operations unavailable: %s", exc)
            return
        family = GaugeMetricFamily(
            "kindler_operations",
            "Cluster operations recorded (reconciler actions and imports), by result.",
            labels=["operation", "status"],
        )
        for operation, status, count in rows:
            family.add_metric([operation, status], float(count))
        yield family


def exposition() -> bytes:
    """Return every Kindler metric in the Prometheus text format."""
    scraped = CollectorRegistry()
    scraped.register(ScrapeCollector())
    return render(db_stats.collector_registry()) + render(scraped)


@api_view("GET")
def metrics(request: HttpRequest) -> HttpResponse:
    """Serve the metrics to a logged-in person or a client with the API token."""
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


def system_figures() -> dict[str, Any]:
    """Return the figures /api/metrics exports, shaped for the System page."""
    from kindler.db.status import database_report

    sync: dict[str, Any] = {}
    for name, read in (
        ("journal_entries", journal_length),
        ("conflicts_open", open_conflicts),
        ("mirror_lag_seconds", mirror_lag_seconds),
    ):
        try:
            sync[name] = read()
        except DatabaseError:
            sync[name] = None
    try:
        operations: list[tuple[str, str, int]] | None = operations_by_result()
    except DatabaseError:
        operations = None
    return {
        "database": database_report(),
        **db_stats.report(),
        "sync": sync,
        "operations": operations,
    }
