from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings
from django.db import OperationalError, connections

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
