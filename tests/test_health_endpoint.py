"""GET /api/health (kindler/views.py)."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.conf import settings
from django.test import Client

from kindler import __version__
from kindler.db.health import State
from tests.conftest import BOTH, wait_for_state
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)


def test_health_is_public_and_healthy_on_postgres(client: Client) -> None:
    response = client.get("/api/health")
    body = response.json()
    assert (response.status_code, body["status"], body["service"], body["version"]) == (
        200,
        "healthy",
        "kindler",
        __version__,
    )
    assert (body["database"]["active"], body["database"]["state"]) == ("postgres", "primary")
    assert body["database"]["postgres"]["configured"] is True
    assert body["database"]["postgres"]["reachable"] is True
    assert body["database"]["postgres"]["error"] is None
    assert isinstance(body["database"]["postgres"]["latency_ms"], float)
    assert datetime.fromisoformat(body["database"]["since"]).tzinfo is not None


def test_health_is_degraded_while_on_the_sqlite_fallback(
    client: Client, pg: PostgresServer
) -> None:
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    body = client.get("/api/health").json()
    assert (body["status"], body["database"]["active"], body["database"]["state"]) == (
        "degraded",
        "sqlite",
        "fallback",
    )
    assert (
        body["database"]["postgres"]["reachable"],
        body["database"]["postgres"]["latency_ms"],
    ) == (
        False,
        None,
    )
    assert body["database"]["postgres"]["error"].startswith("Connection refused")


def test_health_never_shows_a_secret(client: Client, pg: PostgresServer) -> None:
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    text = client.get("/api/health").content.decode()
    assert settings.DATABASES["postgres"]["PASSWORD"] not in text
    assert settings.SECRET_KEY not in text


def test_health_is_healthy_on_embedded_sqlite(client: Client, settings) -> None:
    postgres = settings.DATABASES.pop("postgres")
    try:
        body = client.get("/api/health").json()
    finally:
        settings.DATABASES["postgres"] = postgres
    assert (
        body["status"],
        body["database"]["active"],
        body["database"]["postgres"]["configured"],
    ) == (
        "healthy",
        "sqlite",
        False,
    )
