"""docs/api.md's nginx block, run by Debian's nginx in front of a running Kindler."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websocket
from django.contrib.auth.models import User

from tests import served as running
from tests.conftest import BOTH
from tests.nginx import NGINX, Nginx, check, write_config
from tests.served import PASSWORD, SERVER_HASHER, Served

serve = running.serve
INDEX = "<!doctype html><title>the web UI</title>\n"

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt install nginx)")


class Browser:
    """Requests as a browser sends them: cookies kept, redirects not followed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Accept": "text/html"}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";")[0]
        headers = {name.lower(): value for name, value in response.getheaders()}
        answer = (response.status, headers, response.read().decode())
        connection.close()
        return answer


def test_the_documented_block_passes_nginx_t(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    config = write_config(tmp_path, 8080, tmp_path / "dist", 8000, 8001)
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1].endswith("test is successful")


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_signed_out_browser_is_sent_to_sign_in_and_back(
    serve: Callable[..., Served], tmp_path: Path, settings: Any
) -> None:
    settings.PASSWORD_HASHERS = [SERVER_HASHER]
    User.objects.create_user("ada", password=PASSWORD)
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text(INDEX)
    served = serve()
    nginx = Nginx(tmp_path / "nginx", dist, served.http_port, served.ws_port)
    nginx.start()
    try:
        browser = Browser(nginx.port)
        status, headers, _ = browser.request("GET", "/clusters/dev?tab=log")
        assert (status, headers["location"]) == (
            302,
            f"{nginx.url}/accounts/login/?next=/clusters/dev?tab=log",
        )
        status, _, page = browser.request("GET", "/accounts/login/?next=/clusters/dev")
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert (status, found is not None) == (200, True)
        assert found is not None
        form = {
            "csrfmiddlewaretoken": found.group(1),
            "username": "ada",
            "password": PASSWORD,
            "next": "/clusters/dev",
        }
        status, headers, _ = browser.request("POST", "/accounts/login/", form)
        assert (status, headers["location"]) == (302, "/clusters/dev")
        assert browser.request("GET", "/clusters/dev")[::2] == (200, INDEX)
        assert browser.request("GET", "/")[::2] == (200, INDEX)
        status, _, body = browser.request("GET", "/api/clusters")
        assert (status, json.loads(body)) == (200, [])
        # /ws/ reaches the WebSocket server, which takes the session from this site.
        socket = websocket.create_connection(
            f"ws://127.0.0.1:{nginx.port}/ws/tasks",
            header=[f"Cookie: sessionid={browser.cookies['sessionid']}", f"Origin: {nginx.url}"],
            timeout=30,
            suppress_origin=True,
        )
        socket.send(json.dumps({"type": "ping"}))
        assert json.loads(socket.recv()) == {"type": "pong"}
        socket.close()
    finally:
        nginx.stop()
