"""The WSGI entry point (kindler/wsgi.py): requests carry no server environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from kindler.wsgi import without_process_environment
from tests.conftest import BOTH, wait_for
from tests.pgserver import free_port

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
    kindler_env: dict[str, Any], tmp_path: Path
) -> None:
    # granian copies the process environment into every request; this
    # variable would pass for the Authorization header of every request if
    # kindler.webserver let it reach the workers.
    port = free_port()
    env = {
        **kindler_env,
        "KINDLER_BIND": f"127.0.0.1:{port}",
        "KINDLER_WORKERS": "1",
        "KINDLER_API_TOKEN": TOKEN,
        "KINDLER_METRICS_DIR": str(tmp_path / "metrics"),
        "KINDLER_ACCESS_LOG": "off",
        "HTTP_AUTHORIZATION": f"Bearer {TOKEN}",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "kindler.webserver"],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: status(f"http://127.0.0.1:{port}/api/health") == 200)
        unsigned = status(f"http://127.0.0.1:{port}/api/clusters")
        signed = status(f"http://127.0.0.1:{port}/api/clusters", TOKEN)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert (unsigned, signed) == (401, 200)


def status(url: str, token: str | None = None) -> int | None:
    """Return the HTTP status of a GET, or None while nothing listens."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None
