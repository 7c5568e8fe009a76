"""Kindler as `manage.py serve` runs it (API, WebSocket server, reconciler), started by a test."""

from __future__ import annotations

import http.cookiejar
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from django.conf import settings

from tests.conftest import wait_for
from tests.fakes import FakeTools
from tests.pgserver import free_port

MANAGE = [sys.executable, str(settings.BASE_DIR / "manage.py")]
TOKEN = "served-test-token-" + "x" * 32
PASSWORD = "a long enough password 42"
# The server's own hasher: the tests' fast one is not among its settings.
SERVER_HASHER = "django.contrib.auth.hashers.PBKDF2PasswordHasher"


class Served:
    """A `manage.py serve` a test started: the HTTP API and the WebSocket server."""

    def __init__(self, http_port: int, ws_port: int) -> None:
        self.http_port, self.ws_port = http_port, ws_port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws/tasks"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def health(self) -> Any:
        """Return /api/health's answer, whatever its status."""
        url = f"http://127.0.0.1:{self.http_port}/api/health"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)

    def sign_in(self, username: str) -> str:
        """Sign in through the login page; return the session cookie's value."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        login = f"http://127.0.0.1:{self.http_port}/accounts/login/"
        page = opener.open(login, timeout=30).read().decode()
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert found is not None
        form = {"csrfmiddlewaretoken": found.group(1), "username": username, "password": PASSWORD}
        opener.open(
            urllib.request.Request(login, data=urllib.parse.urlencode(form).encode()), timeout=30
        )
        return next(cookie.value for cookie in jar if cookie.name == "sessionid") or ""

    def connect(self, *headers: str) -> websocket.WebSocket:
        # Only the Origin a test names: the client would add one of its own.
        return websocket.create_connection(
            self.url, header=list(headers), timeout=30, suppress_origin=True
        )

    def refusal(self, *headers: str) -> int:
        """Return the handshake's HTTP status, which must not be 101."""
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            self.connect(*headers)
        return int(refused.value.status_code)


@pytest.fixture
def serve(
    kindler_env: dict[str, Any], fakes: FakeTools, tmp_path: Path
) -> Iterator[Callable[..., Served]]:
    """Start `manage.py serve` on free ports with the fake providers; stop it at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**extra: str) -> Served:
        served = Served(free_port(), free_port())
        env = {
            **kindler_env,
            "KINDLER_FAKE_STATE": str(fakes.state),
            "KINDLER_BIND": f"127.0.0.1:{served.http_port}",
            "KINDLER_WS_BIND": f"127.0.0.1:{served.ws_port}",
            "KINDLER_API_TOKEN": TOKEN,
            "KINDLER_WS_POLL_INTERVAL": "0.1",
            "KINDLER_ACCESS_LOG": "off",
            "KINDLER_METRICS_DIR": str(tmp_path / "metrics"),
            **extra,
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = (tmp_path / "serve.log").open("ab")
        process = subprocess.Popen(
            [*MANAGE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        started.append(process)
        wait_for(lambda: answers(served) or process.poll() is not None, seconds=120)
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        return served

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def answers(served: Served) -> bool:
    """Return True once both servers answer (the socket refuses a handshake without credentials)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{served.http_port}/api/health", timeout=5)
        websocket.create_connection(served.url, timeout=5).close()
    except websocket.WebSocketBadStatusException:
        return True
    except OSError:
        return False
    return True
