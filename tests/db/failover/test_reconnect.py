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
