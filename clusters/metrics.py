"""GET /api/metrics, and the cluster figures it adds to Kindler's own."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clusters import registry
from clusters.api import api_view
from clusters.counts import counted
from clusters.models import OperationLog
from kindler.db.failover.middleware import serves_without_database
from kindler.metrics import exposition

logger = logging.getLogger("kindler.metrics")


def operations_by_result() -> list[tuple[str, str, int]]:
    """Return (operation, status, count) for every operation recorded."""
    rows = OperationLog.objects.values_list("operation", "status").annotate(n=Count("pk"))
    counts = counted("operations by result", rows.db, lambda: count_by_result(rows))
    return sorted((operation, status, n) for (operation, status), n in counts.items())


def count_by_result(rows: QuerySet[Any]) -> dict[tuple[str, str], int]:
    return {(str(operation), str(status)): int(n) for operation, status, n in rows}


class OperationsCollector(Collector):
    """Operations by result, read from the active database when scraped."""

    def collect(self) -> Iterator[Metric]:
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


class ReconcilersCollector(Collector):
    """Live reconcilers by host, and the providers each can run, read when scraped."""

    def collect(self) -> Iterator[Metric]:
        try:
            live = registry.live_registrations()
        except DatabaseError as exc:
            logger.info("Metric kindler_reconcilers unavailable: %s", exc)
            return
        if not live:
            return
        hosts = GaugeMetricFamily(
            "kindler_reconcilers_live",
            "Reconcilers whose heartbeat is fresh, by Docker host.",
            labels=["host"],
        )
        counts: dict[str, int] = {}
        for entry in live:
            counts[entry.host] = counts.get(entry.host, 0) + 1
        for host, count in sorted(counts.items()):
            hosts.add_metric([host], float(count))
        yield hosts
        providers = GaugeMetricFamily(
            "kindler_reconciler_providers",
            "Live reconcilers able to run each provider, by Docker host and provider version.",
            labels=["host", "provider", "version"],
        )
        found: dict[tuple[str, str, str], int] = {}
        for entry in live:
            for provider, version in entry.providers.items():
                key = (entry.host, provider, str(version))
                found[key] = found.get(key, 0) + 1
        for labels, count in sorted(found.items()):
            providers.add_metric(list(labels), float(count))
        yield providers


# Answers during an outage in PostgreSQL-only mode too: that is when it is read.
@serves_without_database
@api_view("GET")
def metrics(request: HttpRequest) -> HttpResponse:
    """Serve the metrics to a logged-in person or a client with the API token."""
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
