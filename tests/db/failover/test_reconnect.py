"""With a host list, a request that loses its connection runs again on PostgreSQL, not SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.test import Client

from clusters.models import Cluster
from kindler.db.failover.monitor import State, monitor
from tests import urls as probe_urls
from tests.conftest import BOTH
from tests.faults import execute
from tests.pgserver import PostgresServer, free_port

pytestmark = [
    pytest.mark.django_db(databases=BOTH, transaction=True),
    pytest.mark.urls("tests.urls"),
]


@pytest.fixture
def listed(pg: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresServer]:
    """A server nothing listens on, then the test server; background probing stopped."""
    db = django_settings.DATABASES["postgres"]
    monkeypatch.setitem(db, "HOST", f"{pg.host},{pg.host}")
    monkeypatch.setitem(db, "PORT", f"{free_port()},{pg.port}")
    monitor.stop()
    yield pg
    probe_urls.after_write = None
    monitor.reset()


def cut_once(pg: PostgresServer) -> None:
    """Terminate this request's PostgreSQL backend, the first time only."""

    def cut() -> None:
        probe_urls.after_write = None
        pid = connections["postgres"].connection.info.backend_pid
        execute(pg, f"SELECT pg_terminate_backend({int(pid)})")

    probe_urls.after_write = cut


def test_a_write_that_loses_its_connection_runs_again_on_postgres(listed: PostgresServer) -> None:
    client: Any = Client(raise_request_exception=False)
    cut_once(listed)
    response = client.post("/probe/create", {"name": "dev", "then_read": "1"})
    assert (
        response.status_code,
        response.json()["alias"],
        monitor.snapshot().state,
        list(Cluster.objects.using("postgres").values_list("name", flat=True)),
    ) == (201, "postgres", State.PRIMARY, ["dev"])


@pytest.fixture
def kept(pg: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> PostgresServer:
    """One server; each thread's PostgreSQL connection kept between requests."""
    monkeypatch.setitem(connections["postgres"].settings_dict, "CONN_MAX_AGE", 60)
    return pg


def drop_kept_connection(pg: PostgresServer) -> None:
    """Terminate the backend of the connection kept from the last request, as a restart would."""
    pid = connections["postgres"].connection.info.backend_pid
    execute(pg, f"SELECT pg_terminate_backend({int(pid)})")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_kept_connection_the_server_dropped_is_replaced_not_failed_over(
    kept: PostgresServer, method: str
) -> None:
    client: Any = Client(raise_request_exception=False)
    assert client.get("/probe/count").json()["alias"] == "postgres"
    drop_kept_connection(kept)
    if method == "GET":
        response = client.get("/probe/count")
    else:
        response = client.post("/probe/create", {"name": "dev"})
    assert (response.status_code, response.json()["alias"], monitor.snapshot().state) == (
        200 if method == "GET" else 201,
        "postgres",
        State.PRIMARY,
    )


def test_a_connection_opened_by_the_request_itself_is_not_tried_again(
    kept: PostgresServer,
) -> None:
    """A fresh connection that fails is an outage: the request goes to SQLite at once."""
    kept.stop()
    response = Client(raise_request_exception=False).get("/probe/count")
    assert (response.status_code, response.json()["alias"]) == (200, "sqlite")


@pytest.fixture
def single(pg: PostgresServer) -> Iterator[PostgresServer]:
    """One server, its backends ended by the test; background probing stopped."""
    monitor.stop()
    yield pg
    probe_urls.after_write = None
    monitor.reset()


def cut_always(pg: PostgresServer) -> None:
    """Terminate the request's PostgreSQL backend after every write it makes there."""

    def cut() -> None:
        pid = connections["postgres"].connection.info.backend_pid
        execute(pg, f"SELECT pg_terminate_backend({int(pid)})")

    probe_urls.after_write = cut


def test_a_write_whose_backend_is_ended_runs_again_on_a_fresh_connection(
    single: PostgresServer,
) -> None:
    cut_once(single)
    response = Client(raise_request_exception=False).post(
        "/probe/create", {"name": "dev", "then_read": "1"}
    )
    assert (
        response.status_code,
        response.json()["alias"],
        monitor.snapshot().state,
        list(Cluster.objects.using("postgres").values_list("name", flat=True)),
    ) == (201, "postgres", State.PRIMARY, ["dev"])


def test_a_write_cut_twice_on_a_usable_server_is_refused_without_switching(
    single: PostgresServer,
) -> None:
    """The probe finds PostgreSQL usable: a 503 that nothing was saved, no fallback."""
    cut_always(single)
    response = Client(raise_request_exception=False).post(
        "/probe/create", {"name": "dev", "then_read": "1"}, HTTP_ACCEPT="application/json"
    )
    assert (
        response.status_code,
        response.json()["detail"].startswith("The database cannot be used right now ("),
        monitor.snapshot().state,
        Cluster.objects.using("postgres").count(),
        Cluster.objects.using("sqlite").count(),
    ) == (503, True, State.PRIMARY, 0, 0)
