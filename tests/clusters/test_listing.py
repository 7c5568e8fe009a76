"""GET /api/clusters with ?limit and ?offset, and the whole list streamed (clusters/listing.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from clusters import listing
from tests.conftest import BOTH
from tests.factories import make_cluster, make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)

NAMES = ["a", "b", "c", "d", "e"]


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


@pytest.fixture
def five(alias: str) -> None:
    for name in reversed(NAMES):
        make_cluster(name=name)


def names(client: Client, query: str = "") -> list[str]:
    response = client.get(f"/api/clusters{query}")
    assert response.status_code == 200, response.content
    return [cluster["name"] for cluster in json.loads(response.getvalue())]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", NAMES),
        ("?limit=2", ["a", "b"]),
        ("?limit=2&offset=3", ["d", "e"]),
        ("?offset=4", ["e"]),
        ("?offset=5", []),
        ("?limit=100000&offset=0", NAMES),
    ],
)
def test_limit_and_offset_pick_the_page(
    five: None, admin_client: Client, query: str, expected: list[str]
) -> None:
    assert names(admin_client, query) == expected


@pytest.mark.parametrize(
    ("query", "field", "least"),
    [
        ("?limit=0", "limit", 1),
        ("?limit=-1", "limit", 1),
        ("?limit=ten", "limit", 1),
        ("?limit=1.5", "limit", 1),
        ("?limit=%C2%B2", "limit", 1),
        ("?limit=", "limit", 1),
        ("?limit=100001", "limit", 1),
        ("?limit=" + "9" * 5000, "limit", 1),
        ("?offset=-1", "offset", 0),
        ("?offset=100001", "offset", 0),
        ("?offset=1e3", "offset", 0),
    ],
)
def test_a_bad_value_is_refused_with_400(
    alias: str, admin_client: Client, query: str, field: str, least: int
) -> None:
    response = admin_client.get(f"/api/clusters{query}")
    assert (response.status_code, response.json()) == (
        400,
        {
            "detail": [
                {
                    "loc": ["query", field],
                    "msg": f"Input should be a whole number from {least} to 100000",
                }
            ]
        },
    )


def test_both_bad_values_are_reported(alias: str, admin_client: Client) -> None:
    response = admin_client.get("/api/clusters?limit=x&offset=y")
    assert [error["loc"] for error in response.json()["detail"]] == [
        ["query", "limit"],
        ["query", "offset"],
    ]


def test_a_list_that_fits_in_one_piece_is_one_body_with_its_length(
    five: None, admin_client: Client
) -> None:
    response = admin_client.get("/api/clusters")
    assert (response.streaming, response["Content-Length"]) == (False, str(len(response.content)))


@pytest.mark.parametrize("query", ["", "?offset=1&limit=3", "?offset=1", "?limit=4"])
def test_a_streamed_list_is_the_same_json_as_one_answered_whole(
    five: None, admin_client: Client, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    whole = admin_client.get(f"/api/clusters{query}")
    monkeypatch.setattr(listing, "PIECE", 2)
    streamed = admin_client.get(f"/api/clusters{query}")
    body = streamed.getvalue()
    assert (whole.streaming, streamed.streaming, streamed["Content-Type"], body) == (
        False,
        True,
        "application/json",
        whole.content,
    )


def test_a_streamed_list_reads_every_piece(
    five: None, admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "PIECE", 2)
    assert (names(admin_client), names(admin_client, "?offset=1&limit=3")) == (
        NAMES,
        ["b", "c", "d"],
    )


def test_a_streamed_list_answers_a_token_without_a_length(
    five: None, client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.KINDLER_API_TOKEN = "token-for-the-streamed-list-" + "x" * 8
    monkeypatch.setattr(listing, "PIECE", 2)
    response = client.get(
        "/api/clusters", headers={"Authorization": f"Bearer {settings.KINDLER_API_TOKEN}"}
    )
    listed = [cluster["name"] for cluster in json.loads(response.getvalue())]
    headers = (response.has_header("Content-Length"), response["Cache-Control"])
    assert (response.status_code, headers, listed) == (200, (False, "no-store, private"), NAMES)
