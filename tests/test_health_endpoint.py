"""GET /api/health (kindler/views.py), and every status page without PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from kindler import __version__
from kindler.db.failover.monitor import State
from kindler.db.sync import identity
from kindler.db.sync.mirror import mirror
from tests.conftest import BOTH, wait_for_state
from tests.factories import make_superuser
from tests.faults import ReadOnlyServer
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)


@pytest.mark.postgres
def test_the_public_health_says_healthy_and_nothing_else(client: Client) -> None:
    response = client.get("/api/health")
    assert (response.status_code, response.json()) == (200, {"status": "healthy"})


@pytest.mark.postgres
def test_health_shows_the_details_to_the_token(client: Client, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = "health-token"
    response = client.get("/api/health", HTTP_AUTHORIZATION="Bearer health-token")
    body = response.json()
    assert (response.status_code, body["status"], body["service"], body["version"]) == (
        200,
        "healthy",
        "kindler",
        __version__,
    )
    assert (body["database"]["active"], body["database"]["state"]) == ("postgres", "primary")
    assert body["database"]["schema"] == {
        "code": __version__,
        "database": __version__,
        "upgrade_required": False,
    }
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
    client.force_login(make_superuser())
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


def test_the_public_health_says_degraded_and_nothing_else(
    client: Client, pg: PostgresServer
) -> None:
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    response = client.get("/api/health")
    assert (response.status_code, response.json()) == (200, {"status": "degraded"})


def test_the_api_token_shows_the_details(client: Client, pg: PostgresServer, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = "health-token"
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    database = client.get("/api/health", HTTP_AUTHORIZATION="Bearer health-token").json()[
        "database"
    ]
    assert database["postgres"]["error"].startswith("Connection refused")


def test_health_never_shows_a_secret(client: Client, pg: PostgresServer) -> None:
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    text = client.get("/api/health").content.decode()
    assert settings.DATABASES["postgres"]["PASSWORD"] not in text
    assert settings.SECRET_KEY not in text


def test_health_is_healthy_on_embedded_sqlite(client: Client, settings) -> None:
    settings.KINDLER_API_TOKEN = "health-token-" + "x" * 20
    postgres = settings.DATABASES.pop("postgres", None)
    try:
        token = f"Bearer {settings.KINDLER_API_TOKEN}"
        body = client.get("/api/health", HTTP_AUTHORIZATION=token).json()
    finally:
        if postgres is not None:
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


def test_health_says_why_it_fell_back(client: Client, pg: PostgresServer) -> None:
    fault = ReadOnlyServer(pg)
    fault.inject()
    try:
        wait_for_state(State.FALLBACK)
        client.force_login(make_superuser())
        database = client.get("/api/health").json()["database"]
    finally:
        fault.recover()
    assert (
        database["state_cause"],
        database["postgres"]["reachable"],
        database["postgres"]["usable"],
    ) == (
        "probe: PostgreSQL is read-only (default_transaction_read_only is on)",
        True,
        False,
    )


def test_the_banner_says_why_postgres_cannot_take_writes(
    client: Client, pg: PostgresServer
) -> None:
    fault = ReadOnlyServer(pg)
    fault.inject()
    try:
        wait_for_state(State.FALLBACK)
        html = client.get("/accounts/login/").content.decode()
    finally:
        fault.recover()
    assert (
        "(PostgreSQL is read-only (default_transaction_read_only is on)) — changes are kept "
        "locally and will be synced when it returns."
    ) in html


# A separate Kindler with no PostgreSQL configured at all: PG_HOST empty, so
# the postgres alias does not exist (in this process it always does).
SQLITE_ONLY = """
import json
import django
django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
call_command("migrate", verbosity=0)
client = Client()
client.force_login(User.objects.create_user("operator", password="x"))
print(json.dumps({url: [r.status_code, r.content.decode()] for url, r in (
    (url, client.get(url)) for url in ("/api/health", "/api/metrics", "/system/")
)}))
"""


@pytest.fixture(scope="module")
def sqlite_only(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Return {url: (status, body)} as a Kindler without PostgreSQL answers them."""
    folder = tmp_path_factory.mktemp("sqlite-only")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kindler.settings",
        "PG_HOST": "",
        "SQLITE_PATH": str(folder / "kindler.db"),
        "KINDLER_MIRROR_INTERVAL": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", SQLITE_ONLY],
        env=env,
        cwd=Path(settings.BASE_DIR),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answers: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return {url: (status, body) for url, (status, body) in answers.items()}


@pytest.mark.slow
def test_health_without_postgres(sqlite_only: dict[str, tuple[int, str]]) -> None:
    status, body = sqlite_only["/api/health"]
    report = json.loads(body)
    del report["database"]["since"]
    assert (status, report) == (
        200,
        {
            "status": "healthy",
            "service": "kindler",
            "version": __version__,
            "database": {
                "active": "sqlite",
                "state": "primary",
                "state_cause": "embedded",
                "fallback": "sqlite",
                "postgres": {
                    "configured": False,
                    "reachable": False,
                    "usable": False,
                    "latency_ms": None,
                    "error": None,
                    "host": None,
                    "hosts": [],
                    "node": None,
                },
                "sync": None,
                "schema": {"code": __version__, "database": __version__, "upgrade_required": False},
            },
            "reconcilers": [],
        },
    )


DATABASE_FIGURES = {
    "kindler_database_active",
    "kindler_database_state",
    "kindler_postgres_up",
    "kindler_postgres_probe_seconds",
    "kindler_journal_entries",
    "kindler_conflicts_open",
    "kindler_mirror_lag_seconds",
}


@pytest.mark.slow
def test_metrics_without_postgres(sqlite_only: dict[str, tuple[int, str]]) -> None:
    status, body = sqlite_only["/api/metrics"]
    figures = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name in DATABASE_FIGURES
    }
    assert (status, figures) == (
        200,
        {
            ("kindler_database_active", (("alias", "postgres"),)): 0.0,
            ("kindler_database_active", (("alias", "sqlite"),)): 1.0,
            ("kindler_database_state", (("state", "primary"),)): 1.0,
            ("kindler_database_state", (("state", "fallback"),)): 0.0,
            ("kindler_database_state", (("state", "recovering"),)): 0.0,
            ("kindler_database_state", (("state", "unavailable"),)): 0.0,
        },
    )


@pytest.mark.slow
def test_the_system_page_without_postgres(sqlite_only: dict[str, tuple[int, str]]) -> None:
    status, html = sqlite_only["/system/"]
    assert (
        status,
        "<dt>PostgreSQL</dt><dd>not configured (PG_HOST is unset)</dd>" in html,
        "Nothing to sync: PostgreSQL is not configured, SQLite is the only database." in html,
    ) == (200, True, True)


@pytest.mark.postgres
def test_the_details_name_the_primary_node(client: Client, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = "health-token"
    mirror()
    current = identity.read()
    node = client.get("/api/health", HTTP_AUTHORIZATION="Bearer health-token").json()["database"][
        "postgres"
    ]["node"]
    assert (node["server"], node["system_identifier"], node["timeline"]) == (
        current.server,
        str(current.system_identifier),
        current.timeline,
    )


@pytest.mark.postgres
def test_the_public_health_leaves_everything_out(client: Client) -> None:
    mirror()
    assert client.get("/api/health").json() == {"status": "healthy"}
