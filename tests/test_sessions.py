"""Sessions: a logout ends them, and a database switch does not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.sessions.backends.file import SessionStore
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from kindler.db.failover.monitor import State
from kindler.db.sync.mirror import mirror
from tests.conftest import BOTH, wait_for_state
from tests.factories import make_superuser
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)


def signed_in() -> tuple[Client, str]:
    """Return a client signed in through the login form, and its session cookie."""
    make_superuser(username="ada", password="pw-ada-123")
    client = Client()
    response = client.post("/accounts/login/", {"username": "ada", "password": "pw-ada-123"})
    assert response.status_code == 302
    return client, client.cookies["sessionid"].value


def with_cookie(value: str) -> Client:
    other = Client()
    other.cookies["sessionid"] = value
    return other


def test_a_session_cookie_works_until_logout() -> None:
    client, cookie = signed_in()
    assert with_cookie(cookie).get("/").status_code == 200
    client.post("/accounts/logout/")
    response = with_cookie(cookie).get("/")
    assert (response.status_code, response["Location"].split("?")[0]) == (302, "/accounts/login/")


def test_a_session_survives_a_switch_to_sqlite(pg: PostgresServer) -> None:
    _, cookie = signed_in()
    mirror()  # accounts reach SQLite with the mirror, as every few seconds in a running Kindler
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    assert with_cookie(cookie).get("/").status_code == 200


def session_files() -> list[str]:
    folder = Path(settings.SESSION_FILE_PATH)
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("sessionid"))


def test_clearsessions_removes_expired_session_files_only() -> None:
    for name in session_files():
        (Path(settings.SESSION_FILE_PATH) / name).unlink()
    expired, current = SessionStore(), SessionStore()
    expired.set_expiry(timezone.now() - timedelta(seconds=1))
    expired.create()
    current.create()
    assert len(session_files()) == 2
    call_command("clearsessions")
    assert session_files() == [f"sessionid{current.session_key}"]
