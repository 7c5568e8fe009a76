from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from clusters.models import Cluster
from kindler.db.failover.monitor import State, monitor
from kindler.db.sync.journal import journal_suppressed
from tests import urls as probe_urls
from tests.conftest import BOTH, wait_for_state
from tests.pgserver import PostgresServer

pytestmark = [
    pytest.mark.django_db(databases=BOTH, transaction=True),
    pytest.mark.urls("tests.urls"),
]


@pytest.fixture
def client() -> Client:
    """A client that, like a real server, does not re-raise handled exceptions."""
    return Client(raise_request_exception=False)


@pytest.fixture
def frozen_monitor(pg: PostgresServer) -> Iterator[PostgresServer]:
    """Stop background probing, so only a failing request can notice the outage."""
    monitor.stop()
    yield pg
    probe_urls.after_write = None
    monitor.reset()


def test_requests_are_served_from_postgres_while_it_is_healthy(client: Client) -> None:
    assert client.get("/probe/count").json() == {"count": 0, "alias": "postgres"}


def test_a_read_that_loses_postgres_is_answered_from_sqlite(
    client: Client, frozen_monitor: PostgresServer
) -> None:
    # A row only the local copy has, as the mirror writes it.
    with journal_suppressed():
        Cluster.objects.using("sqlite").create(name="local-only", http_port=20001)
    frozen_monitor.stop("immediate")
    response = client.get("/probe/count")
    assert (response.status_code, response.json()) == (200, {"count": 1, "alias": "sqlite"})
    assert monitor.snapshot().state is State.FALLBACK


def test_a_write_that_cannot_connect_is_saved_on_sqlite(
    client: Client, frozen_monitor: PostgresServer
) -> None:
    frozen_monitor.stop("immediate")
    response = client.post("/probe/create", {"name": "dev"})
    assert (response.status_code, response.json()["alias"]) == (201, "sqlite")
    assert list(Cluster.objects.using("sqlite").values_list("name", flat=True)) == ["dev"]


def test_a_write_interrupted_before_commit_is_rolled_back_and_saved_on_sqlite(
    client: Client, frozen_monitor: PostgresServer
) -> None:
    probe_urls.after_write = frozen_monitor.kill
    response = client.post("/probe/create", {"name": "dev", "then_read": "1"})
    assert (response.status_code, response.json()["alias"]) == (201, "sqlite")
    local = list(Cluster.objects.using("sqlite").values_list("name", "uid"))
    frozen_monitor.ensure_running()
    wait_for_state(State.PRIMARY)
    # The rolled-back attempt left nothing in PostgreSQL: the one row there is
    # the SQLite one, carried over by the journal replay.
    assert list(Cluster.objects.using("postgres").values_list("name", "uid")) == local
    assert [name for name, _ in local] == ["dev"]


def test_a_write_whose_commit_fails_gets_a_503_and_is_not_retried(
    client: Client, frozen_monitor: PostgresServer
) -> None:
    probe_urls.after_write = frozen_monitor.kill
    response = client.post("/probe/create", {"name": "dev"}, HTTP_ACCEPT="application/json")
    assert (response.status_code, response.json()) == (
        503,
        {
            "detail": "PostgreSQL went away while this change was being committed, so it may "
            "not have been saved. Check, then retry."
        },
    )
    assert list(Cluster.objects.using("sqlite").values_list("name", flat=True)) == []


def test_the_503_page_for_a_browser_is_html(client: Client, frozen_monitor: PostgresServer) -> None:
    probe_urls.after_write = frozen_monitor.kill
    response = client.post("/probe/create", {"name": "dev"})
    assert (response.status_code, response["Content-Type"]) == (503, "text/html; charset=utf-8")
    assert b"it may not have been saved" in response.content
