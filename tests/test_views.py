"""The System page (kindler/views.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from kindler.db import telemetry
from kindler.db.sync import identity
from kindler.db.sync.mirror import mirror
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


@pytest.mark.postgres
def test_the_system_page_names_the_primary_node(person: Client) -> None:
    mirror()
    current = identity.read()
    response = person.get("/system/")
    node = re.escape(f"{current.server} (system {current.system_identifier}, timeline")
    assert re.search(
        rf"<dt>Primary node</dt><dd>{node} {current.timeline}\), checked ", response.text
    )


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


def test_the_auth_check_answers_204_to_a_signed_in_session(person: Client) -> None:
    response = person.get("/accounts/auth-check")
    assert (response.status_code, response.content, response["Cache-Control"]) == (
        204,
        b"",
        "no-store, private",
    )


def test_the_auth_check_answers_401_without_a_session(client: Client) -> None:
    response = client.get("/accounts/auth-check")
    assert (response.status_code, response.content, response["Cache-Control"]) == (
        401,
        b"",
        "no-store",
    )


def test_the_auth_check_answers_401_to_the_api_token(client: Client, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = "t" * 40
    response = client.get("/accounts/auth-check", headers={"Authorization": "Bearer " + "t" * 40})
    assert response.status_code == 401


def test_the_auth_check_refuses_a_post(person: Client) -> None:
    assert person.post("/accounts/auth-check").status_code == 405
