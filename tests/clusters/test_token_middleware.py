"""API requests with a bearer token take the short path (clusters.middleware.TokenApiMiddleware)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import include, path

from tests.conftest import BOTH
from tests.factories import make_cluster, make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)

TOKEN = "t" * 40


def signed_in_only(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": request.user.get_username()})


@login_not_required
def raises(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("a view that fails")


# This module is also a URLconf: one API view that needs a signed-in person
# (none of Kindler's do), one that fails, then Kindler's own.
urlpatterns = [
    path("api/signed-in-only", signed_in_only),
    path("api/raises", raises),
    path("", include("kindler.urls")),
]
handler500 = "clusters.errors.server_error"


@pytest.fixture
def token_client(settings: Any) -> Client:
    settings.KINDLER_API_TOKEN = TOKEN
    return Client(headers={"Authorization": f"Bearer {TOKEN}"})


def test_a_token_read_sets_no_cookie_and_varies_on_nothing_of_the_session(
    alias: str, token_client: Client
) -> None:
    make_cluster(name="dev")
    response = token_client.get("/api/clusters/dev")
    assert response.status_code == 200
    assert response.json()["name"] == "dev"
    assert response["Content-Length"] == str(len(response.content))
    assert response.cookies == {}
    assert "Vary" not in response
    # The headers of the middleware above the short path are still there.
    assert response["X-Content-Type-Options"] == "nosniff"


def test_a_token_write_needs_no_csrf_token(alias: str, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = TOKEN
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {TOKEN}"})
    body = {"name": "dev", "provider": "k3d", "http_port": 18090, "https_port": 18453}
    response = client.post("/api/clusters", {**body, "pf_port": 19001}, "application/json")
    assert response.status_code == 202
    assert response.cookies == {}


def test_a_wrong_token_with_a_signed_in_session_is_still_refused(alias: str, settings: Any) -> None:
    settings.KINDLER_API_TOKEN = TOKEN
    make_superuser()
    client = Client()
    assert client.login(username="admin", password="password")
    response = client.get("/api/clusters", headers={"Authorization": "Bearer " + "w" * 40})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API token"})


def test_a_signed_in_session_without_a_token_takes_the_full_path(alias: str) -> None:
    make_superuser()
    client = Client()
    assert client.login(username="admin", password="password")
    response = client.get("/api/clusters")
    assert response.status_code == 200
    # Handed out by the CSRF middleware, which the token path skips.
    assert set(response.cookies) == {"csrftoken", "XSRF-TOKEN"}


def test_a_token_does_not_open_pages_outside_the_api(alias: str, token_client: Client) -> None:
    response = token_client.get("/")
    assert (response.status_code, response["Location"]) == (302, "/accounts/login/?next=/")


@pytest.mark.urls(__name__)
def test_a_token_does_not_open_an_api_view_that_needs_a_signed_in_person(
    alias: str, token_client: Client
) -> None:
    response = token_client.get("/api/signed-in-only")
    assert (response.status_code, response["Location"]) == (
        302,
        "/accounts/login/?next=/api/signed-in-only",
    )
    make_superuser()
    signed_in = Client()
    assert signed_in.login(username="admin", password="password")
    assert signed_in.get("/api/signed-in-only").json() == {"user": "admin"}


@pytest.mark.urls(__name__)
def test_a_view_failing_on_the_token_path_answers_the_api_500(
    alias: str, token_client: Client
) -> None:
    token_client.raise_request_exception = False
    response = token_client.get("/api/raises")
    assert (response.status_code, response.json()) == (500, {"detail": "Internal server error"})


def test_an_unknown_api_path_with_a_token_is_the_api_404(alias: str, token_client: Client) -> None:
    response = token_client.get("/api/no-such-thing")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found"})


def test_a_token_answer_is_kept_out_of_caches(alias: str, token_client: Client) -> None:
    response = token_client.get("/api/clusters")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store, private"


def test_a_token_request_for_an_unknown_host_is_refused_as_a_session_one_is(
    alias: str, token_client: Client
) -> None:
    make_superuser()
    signed_in = Client()
    assert signed_in.login(username="admin", password="password")
    by_token = token_client.get("/api/clusters", headers={"Host": "evil.example"})
    by_session = signed_in.get("/api/clusters", headers={"Host": "evil.example"})
    assert (by_token.status_code, by_token.json()) == (400, {"detail": "Bad request"})
    assert (by_session.status_code, by_session.json()) == (400, {"detail": "Bad request"})
