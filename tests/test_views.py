"""The System page (kindler/views.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from kindler.db import telemetry
from tests.conftest import BOTH
from tests.factories import make_cluster, make_operation

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture
def person(client: Client) -> Client:
    client.force_login(User.objects.create_user("operator", password="x"))
    return client


def test_the_system_page_needs_a_login(client: Client) -> None:
    response = client.get("/system/")
    assert (response.status_code, response["Location"]) == (302, "/accounts/login/?next=/system/")


@pytest.mark.postgres
def test_the_system_page_names_the_active_database(person: Client) -> None:
    response = person.get("/system/")
    assert response.context["status"].active == "postgres"


def test_the_system_page_shows_the_state_and_its_cause(person: Client) -> None:
    response = person.get("/system/")
    cause = re.escape(response.context["status"].failover.cause)
    assert re.search(rf"<dd>primary since [^<]+: {cause}</dd>", response.text)


@pytest.mark.postgres
def test_the_system_page_shows_query_statistics_per_alias(person: Client) -> None:
    response = person.get("/system/")
    aliases = [q["alias"] for q in response.context["queries"]]
    assert "postgres" in aliases


def test_the_system_page_shows_the_switch_history(
    person: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "switches"
    path.write_text(
        '{"at": "2026-01-01T00:00:00+00:00", "source": "primary", "target": "fallback",'
        ' "cause": "probe failed: connection refused", "seconds_in_source": 12.5, "pid": 7}\n'
    )
    monkeypatch.setattr(telemetry, "history_path", lambda: path)
    response = person.get("/system/")
    assert "<td>probe failed: connection refused</td>" in response.content.decode()


def test_the_system_page_counts_operations_by_result(person: Client) -> None:
    make_operation(make_cluster(), operation="delete", status="success")
    response = person.get("/system/")
    [table] = response.context["tables"]
    assert (table.title, table.columns, table.rows) == (
        "Cluster operations recorded (reconciler actions and imports), by result",
        ("operation", "status"),
        [(("delete", "success"), 1.0)],
    )


@pytest.mark.postgres
def test_the_system_page_shows_the_sync_figures(person: Client) -> None:
    response = person.get("/system/")
    assert "<dt>Last replay</dt><dd>never" in response.text


def test_the_navigation_links_to_the_system_page(person: Client) -> None:
    response = person.get("/system/")
    assert '<a href="/system/">System</a>' in response.content.decode()
