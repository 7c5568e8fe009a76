from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import OperationalError, connections, transaction

from kindler.db.failover import timeouts
from kindler.db.failover.errors import is_commit_not_sent
from kindler.db.failover.monitor import State, monitor
from kindler.db.pool import clear_idle
from tests.conftest import BOTH, wait_for_state
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)


def budget() -> float:
    """The longest a request may wait on a paused PostgreSQL: connect timeout plus one probe."""
    return settings.PG_CONNECT_TIMEOUT + settings.KINDLER_HEALTH_INTERVAL


def timed_query(results: dict[str, object]) -> None:
    started = time.monotonic()
    try:
        with connections["postgres"].cursor() as cursor:
            cursor.execute("SELECT 1")
        results["outcome"] = "answered"
    except OperationalError as exc:
        results["outcome"] = str(exc)
    finally:
        results["seconds"] = time.monotonic() - started
        connections["postgres"].close()


def test_connecting_to_a_paused_postmaster_gives_up_within_the_connect_timeout(
    pg: PostgresServer,
) -> None:
    connections["postgres"].close()
    # Not a pooled connection the paused postmaster's backends still serve: a new one.
    clear_idle()
    pg.pause()
    results: dict[str, object] = {}
    timed_query(results)
    assert str(results["outcome"]).startswith("PostgreSQL did")
    assert float(str(results["seconds"])) < budget() + 0.5


def test_a_query_stuck_on_a_paused_backend_is_released_when_the_monitor_declares_it_down(
    pg: PostgresServer,
) -> None:
    results: dict[str, object] = {}
    connections["postgres"].ensure_connection()
    pg.pause(backends=True)
    timed_query(results)
    assert results["outcome"] == "PostgreSQL was declared unreachable while waiting for a query"
    assert float(str(results["seconds"])) < budget() + 0.5
    assert monitor.snapshot().state is State.FALLBACK


def test_resumed_server_is_used_again(pg: PostgresServer) -> None:
    pg.pause(backends=True)
    wait_for_state(State.FALLBACK)
    pg.resume()
    wait_for_state(State.PRIMARY)
    thread_results: dict[str, object] = {}
    worker = threading.Thread(target=timed_query, args=(thread_results,))
    worker.start()
    worker.join()
    assert thread_results["outcome"] == "answered"


@pytest.fixture
def commit_probe() -> Iterator[str]:
    """A table on PostgreSQL for rows whose commit the test watches."""
    with connections["postgres"].cursor() as cursor:
        cursor.execute("CREATE TABLE commit_probe (n integer)")
    yield "commit_probe"
    with connections["postgres"].cursor() as cursor:
        cursor.execute("DROP TABLE commit_probe")


def committed_rows() -> int:
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM commit_probe")
        return int(cursor.fetchone()[0])


def test_a_commit_without_a_round_trip_of_the_deadline_left_is_not_sent(commit_probe: str) -> None:
    # One wait of 0.6 s (the write and a sleep in one message) is the request's
    # fastest round trip; at most 0.4 s of the deadline is left for the COMMIT.
    with (
        pytest.raises(OperationalError) as raised,
        timeouts.request_deadline(1.0),
        transaction.atomic(using="postgres"),
        connections["postgres"].cursor() as cursor,
    ):
        cursor.execute("INSERT INTO commit_probe VALUES (1); SELECT pg_sleep(0.6)")
    connections["postgres"].close()
    assert (is_commit_not_sent(raised.value), committed_rows()) == (True, 0)


def test_a_commit_sent_in_time_is_awaited_and_saved(commit_probe: str) -> None:
    # The write answers at once (the fastest round trip); the sleep after it
    # leaves less than half the deadline, still more than a round trip.
    with (
        timeouts.request_deadline(1.0),
        transaction.atomic(using="postgres"),
        connections["postgres"].cursor() as cursor,
    ):
        cursor.execute("INSERT INTO commit_probe VALUES (1)")
        cursor.execute("SELECT pg_sleep(0.6)")
    assert committed_rows() == 1
