"""Sessions: a logout ends them, and a database switch does not."""

from __future__ import annotations

import pytest
from django.test import Client

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
