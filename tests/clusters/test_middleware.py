"""The CSRF check under Django's names and axios's (clusters/middleware.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from tests.conftest import BOTH
from tests.factories import make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)


def login_page(client: Client) -> str:
    """Open the sign-in page; return its form's CSRF token."""
    page = client.get("/accounts/login/").content.decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


def test_the_sign_in_page_sets_both_cookies_to_one_secret(alias: str) -> None:
    client = Client(enforce_csrf_checks=True)
    login_page(client)
    assert client.cookies["XSRF-TOKEN"].value == client.cookies["csrftoken"].value


def test_signing_in_hands_the_new_secret_to_both_cookies(alias: str) -> None:
    make_superuser()
    client = Client(enforce_csrf_checks=True)
    token = login_page(client)
    before = client.cookies["csrftoken"].value
    form = {"username": "admin", "password": "password", "csrfmiddlewaretoken": token}
    assert client.post("/accounts/login/", form).status_code == 302
    after = client.cookies["csrftoken"].value
    assert after != before
    assert client.cookies["XSRF-TOKEN"].value == after


def test_a_form_with_the_page_token_still_passes(alias: str) -> None:
    make_superuser()
    client = Client(enforce_csrf_checks=True)
    form = {"username": "admin", "password": "password", "csrfmiddlewaretoken": login_page(client)}
    assert client.post("/accounts/login/", form).status_code == 302


def test_a_form_with_only_the_axios_header_passes(alias: str) -> None:
    make_superuser()
    client = Client(enforce_csrf_checks=True)
    login_page(client)
    token = client.cookies["XSRF-TOKEN"].value
    form = {"username": "admin", "password": "password"}
    response = client.post("/accounts/login/", form, headers={"X-XSRF-TOKEN": token})
    assert response.status_code == 302


def test_a_cross_site_form_with_the_axios_header_is_refused(alias: str) -> None:
    client = Client(enforce_csrf_checks=True)
    login_page(client)
    token = client.cookies["XSRF-TOKEN"].value
    form = {"username": "admin", "password": "password"}
    headers = {"X-XSRF-TOKEN": token, "Origin": "https://evil.example"}
    assert client.post("/accounts/login/", form, headers=headers).status_code == 403


def test_a_response_without_a_csrf_secret_sets_no_axios_cookie(client: Client) -> None:
    response = client.get("/api/health")
    assert "XSRF-TOKEN" not in response.cookies


def test_the_axios_cookie_follows_the_csrf_cookie_settings(alias: str, settings: Any) -> None:
    settings.CSRF_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SAMESITE = "Strict"
    client = Client()
    login_page(client)
    cookie = client.cookies["XSRF-TOKEN"]
    assert (cookie["secure"], cookie["samesite"], cookie["httponly"]) == (True, "Strict", "")


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


NUL_IN_URL = "The URL contains a NUL character (%00), which no name or value may hold."


def test_a_nul_in_an_api_path_is_400(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/api/clusters/dev%00")
    assert (response.status_code, response.json()) == (400, {"detail": NUL_IN_URL})


def test_a_nul_in_a_page_path_is_400_with_the_reason(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/clusters/dev%00/")
    assert response.status_code == 400
    assert f"<p>{NUL_IN_URL}</p>" in response.text


def test_a_nul_in_an_admin_search_is_400(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/admin/clusters/cluster/?q=dev%00")
    assert response.status_code == 400


def test_a_nul_in_a_query_parameter_name_is_400(alias: str, admin_client: Client) -> None:
    assert admin_client.get("/?q%00=dev").status_code == 400


def test_an_escaped_percent_before_00_is_text_not_a_nul(alias: str, admin_client: Client) -> None:
    # %2500 decodes to the three characters "%00": a search for them, not a NUL.
    response = admin_client.get("/admin/clusters/cluster/?q=dev%2500")
    assert response.status_code == 200


def test_a_nul_after_an_escaped_percent_is_400(alias: str, admin_client: Client) -> None:
    # %25%00 decodes to "%" and a NUL.
    assert admin_client.get("/admin/clusters/cluster/?q=%25%00").status_code == 400
