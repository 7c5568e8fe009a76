"""One deadline for all of a request's waits: past it, 503 "too slow" and nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import Client

from clusters.models import Cluster
from kindler.db.failover.middleware import too_slow_message
from kindler.db.failover.monitor import State, monitor
from tests import urls as probe_urls
from tests.conftest import BOTH
from tests.pgserver import PostgresServer

pytestmark = [
    pytest.mark.django_db(databases=BOTH, transaction=True),
    pytest.mark.urls("tests.urls"),
]


def sleep_on_postgres(seconds: float) -> None:
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])


@pytest.fixture
def slow_statements(pg: PostgresServer) -> Iterator[list[float]]:
    """Statements of the given lengths after the write, each within the statement bound."""
    lengths: list[float] = []

    def run() -> None:
        for seconds in lengths:
            sleep_on_postgres(seconds)

    probe_urls.after_write = run
    yield lengths
    probe_urls.after_write = None


def create(name: str) -> Any:
    return Client(raise_request_exception=False).post(
        "/probe/create", {"name": name}, HTTP_ACCEPT="application/json"
    )


def test_statements_each_in_time_but_past_the_deadline_together_answer_503(
    slow_statements: list[float], settings: Any
) -> None:
    settings.KINDLER_REQUEST_DEADLINE = 1.5
    slow_statements.extend([0.6, 0.6, 0.6])
    response = create("slow")
    assert (
        response.status_code,
        response.json()["detail"],
        monitor.snapshot().state,
        Cluster.objects.using("postgres").filter(name="slow").count(),
        Cluster.objects.using("sqlite").filter(name="slow").count(),
    ) == (503, too_slow_message(), State.PRIMARY, 0, 0)


def test_a_request_within_its_deadline_is_saved(
    slow_statements: list[float], settings: Any
) -> None:
    settings.KINDLER_REQUEST_DEADLINE = 3.0
    slow_statements.extend([0.3, 0.3])
    response = create("in-time")
    assert (
        response.status_code,
        Cluster.objects.using("postgres").filter(name="in-time").count(),
    ) == (201, 1)


def test_the_message_names_the_deadline(settings: Any) -> None:
    settings.KINDLER_REQUEST_DEADLINE = 11
    assert too_slow_message() == (
        "PostgreSQL is too slow: this request did not finish within 11 s "
        "(KINDLER_REQUEST_DEADLINE). Nothing was saved; retry in a moment."
    )
