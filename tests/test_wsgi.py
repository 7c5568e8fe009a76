"""The WSGI entry point (kindler/wsgi.py): requests carry no server environment."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from kindler.wsgi import without_process_environment
from tests.conftest import BOTH, WebServer, wait_for

TOKEN = "wsgi-test-token-" + "x" * 32


def seen_by_app(environ: dict[str, Any], process: dict[str, str]) -> dict[str, Any]:
    """Return the environ the wrapped application is handed."""
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.update(environ)
        return [b""]

    without_process_environment(app, process)(environ, lambda *args: None)
    return seen


def test_the_server_environment_is_taken_out_of_each_request() -> None:
    process = {"PG_PASSWORD": "secret", "KINDLER_API_TOKEN": "token"}
    request = {"PATH_INFO": "/api/health", "HTTP_X_REAL": "2"}
    assert seen_by_app({**process, **request}, process) == request


def test_headers_and_request_keys_are_never_taken_out() -> None:
    process = {"HTTP_X_SENT": "1", "SERVER_NAME": "localhost", "OTHER": "x"}
    request = {"HTTP_X_SENT": "1", "SERVER_NAME": "localhost"}
    assert seen_by_app({**process, **request}, process) == request


def test_a_variable_the_request_overrides_keeps_the_request_value() -> None:
    assert seen_by_app({"OTHER": "from the request"}, {"OTHER": "x"}) == {
        "OTHER": "from the request"
    }


def test_the_process_environment_is_read_once() -> None:
    process = {"PG_PASSWORD": "secret"}
    app = without_process_environment(lambda environ, start: [repr(environ).encode()], process)
    process["LATER"] = "value"
    assert b"".join(app({"LATER": "value"}, lambda *args: None)) == b"{'LATER': 'value'}"


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_variable_named_like_a_header_does_not_sign_requests_in(
    start_web_server: Callable[..., WebServer],
) -> None:
    # granian copies the process environment into every request; this
    # variable would pass for the Authorization header of every request if
    # kindler.webserver let it reach the workers.
    server = start_web_server(
        KINDLER_API_TOKEN=TOKEN, KINDLER_WORKERS="1", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
    )
    wait_for(server.answers)
    unsigned = server.get("/api/clusters")[0]
    signed = server.get("/api/clusters", TOKEN)[0]
    assert (unsigned, signed) == (401, 200)
