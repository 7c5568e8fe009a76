"""Kindler as a newcomer runs it: SQLite alone, no PG_HOST, no postgres alias.

These run with KINDLER_TEST_MODE=sqlite only (scripts/test's second run); the
PostgreSQL run checks the same pages against PostgreSQL elsewhere.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import close_old_connections, connections
from django.test import Client

from clusters.models import Cluster
from tests.conftest import SQLITE_ONLY
from tests.factories import make_cluster, make_superuser
from tests.faults import held_open, read_only
from tests.test_metrics import samples

pytestmark = [
    pytest.mark.django_db(databases=["sqlite"]),
    pytest.mark.skipif(not SQLITE_ONLY, reason="runs with KINDLER_TEST_MODE=sqlite only"),
]
TOKEN = "a-token-for-sqlite-alone-0123456789"


@pytest.fixture
def person(client: Client) -> Client:
    client.force_login(User.objects.create_user("viewer", password="x"))
    return client


def test_there_is_no_postgres_alias() -> None:
    assert sorted(settings.DATABASES) == ["default", "sqlite"]


def test_the_system_page_names_sqlite(person: Client) -> None:
    response = person.get("/system/")
    assert (response.status_code, response.context["status"].active) == (200, "sqlite")


def test_the_public_health_is_healthy_on_sqlite(client: Client) -> None:
    assert client.get("/api/health").json() == {"status": "healthy"}


def test_health_shows_sqlite_to_a_signed_in_person(client: Client) -> None:
    client.force_login(make_superuser())
    body = client.get("/api/health").json()
    assert (
        body["status"],
        body["database"]["active"],
        body["database"]["postgres"]["configured"],
    ) == ("healthy", "sqlite", False)


def test_the_metrics_report_sqlite_as_active(client: Client, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = TOKEN
    make_cluster(name="dev")
    response = client.get("/api/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    figures = samples(response.content.decode())
    assert (response.status_code, figures[("kindler_database_active", (("alias", "sqlite"),))]) == (
        200,
        1.0,
    )


def test_dbstatus_names_sqlite_and_no_postgres() -> None:
    out = StringIO()
    call_command("dbstatus", stdout=out)
    lines = out.getvalue().splitlines()
    assert (lines[0], lines[2]) == (
        "Active database: sqlite",
        "PostgreSQL:      not configured (PG_HOST is unset)",
    )


def test_createsuperuser_writes_to_sqlite() -> None:
    call_command(
        "createsuperuser",
        interactive=False,
        username="root",
        email="root@example.com",
        stdout=StringIO(),
    )
    assert list(User.objects.values_list("username", "is_superuser")) == [("root", True)]


def test_the_dashboard_lists_clusters(person: Client) -> None:
    make_cluster(name="dev")
    response = person.get("/")
    assert (response.status_code, [c.name for c in response.context["page"]]) == (200, ["dev"])


@pytest.mark.django_db(databases=["sqlite"], transaction=True)
@pytest.mark.urls("tests.urls")
def test_a_write_after_the_file_was_read_only_is_saved_once_it_is_writable() -> None:
    client = Client(raise_request_exception=False)
    path = Path(settings.DATABASES["sqlite"]["NAME"])
    connections["sqlite"].close()
    # Held open by another process, as the other workers do.
    with held_open(path):
        # The request opens the file while it is read-only: its connection is too.
        with read_only(path):
            refused = client.post("/api/probe/create", {"name": "dev"})
        # What Django's handlers do when a request ends (the test client leaves it out).
        close_old_connections()
        saved = client.post("/api/probe/create", {"name": "uat"})
    assert (
        refused.status_code,
        refused.json(),
        saved.status_code,
        list(Cluster.objects.values_list("name", flat=True)),
    ) == (
        503,
        {
            "detail": "The local SQLite file cannot be written (read-only file or folder), "
            "so nothing was saved."
        },
        201,
        ["uat"],
    )
