"""Kindler's backends ended again and again while writes run: no switch, nothing lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import Client

from clusters.models import Cluster
from kindler.db.failover.monitor import State, monitor
from tests.conftest import BOTH
from tests.faults import execute
from tests.pgserver import PostgresServer

pytestmark = [
    pytest.mark.django_db(databases=BOTH, transaction=True),
    pytest.mark.urls("tests.urls"),
]

WRITERS = 3
SECONDS = 4.0
KILL_EVERY = 0.25
END_KINDLERS_BACKENDS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE application_name LIKE 'kindler%' AND pid <> pg_backend_pid()"
)


@pytest.fixture
def killer(pg: PostgresServer) -> Iterator[list[int]]:
    """End every backend of Kindler's (the probe's too) every KILL_EVERY seconds."""
    stop = threading.Event()
    rounds: list[int] = []

    def run() -> None:
        while not stop.wait(KILL_EVERY):
            execute(pg, END_KINDLERS_BACKENDS)
            rounds.append(1)

    thread = threading.Thread(target=run, name="killer")
    thread.start()
    yield rounds
    stop.set()
    thread.join()


def write_for(seconds: float, answers: list[tuple[str, int]]) -> None:
    client: Any = Client(raise_request_exception=False)
    ends = time.monotonic() + seconds
    try:
        while time.monotonic() < ends:
            name = f"ended-{threading.get_ident()}-{len(answers)}"
            response = client.post(
                "/probe/create", {"name": name, "then_read": "1"}, HTTP_ACCEPT="application/json"
            )
            answers.append((name, response.status_code))
    finally:
        connections.close_all()


def test_ended_backends_switch_nothing_and_lose_nothing(killer: list[int]) -> None:
    assert monitor.active_alias() == "postgres"
    before = monitor.snapshot().transitions
    answers: list[tuple[str, int]] = []
    writers = [threading.Thread(target=write_for, args=(SECONDS, answers)) for _ in range(WRITERS)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    after = monitor.snapshot()
    acknowledged = {name for name, status in answers if status == 201}
    saved = set(Cluster.objects.using("postgres").values_list("name", flat=True))
    assert len(killer) >= 10
    assert (
        after.state,
        after.transitions[len(before) :],
        sorted({status for _, status in answers} - {201, 503}),
        sorted(acknowledged - saved),
    ) == (State.PRIMARY, (), [], [])
    assert len(acknowledged) > 0
