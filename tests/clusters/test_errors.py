"""Error pages in the site's style, JSON under /api/, nothing internal revealed."""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory

from clusters import errors
from tests.conftest import BOTH

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture
def rf() -> RequestFactory:
    return RequestFactory(SERVER_NAME="127.0.0.1")


def test_a_server_error_page_says_little(rf: RequestFactory) -> None:
    response = errors.server_error(rf.get("/clusters/dev/"))
    assert response.status_code == 500
    assert b"<h1>Something went wrong</h1>" in response.content


def test_a_server_error_under_api_is_json(rf: RequestFactory) -> None:
    response = errors.server_error(rf.get("/api/clusters"))
    assert response.status_code == 500
    assert json.loads(response.content) == {"detail": "Internal server error"}


def test_a_bad_request_under_api_is_json(rf: RequestFactory) -> None:
    response = errors.bad_request(rf.get("/api/clusters"), Exception("details"))
    assert (response.status_code, json.loads(response.content)) == (400, {"detail": "Bad request"})


def test_a_permission_denied_under_api_is_json(rf: RequestFactory) -> None:
    response = errors.permission_denied(rf.get("/api/clusters"), Exception("details"))
    assert (response.status_code, json.loads(response.content)) == (403, {"detail": "Forbidden"})


def test_a_csrf_failure_under_api_names_the_reason(rf: RequestFactory) -> None:
    response = errors.csrf_failure(rf.post("/api/clusters"), reason="CSRF cookie not set.")
    assert json.loads(response.content) == {"detail": "CSRF check failed: CSRF cookie not set."}
