"""The example hooks in docs/hooks/, run as Kindler runs them, against stand-ins.

Portainer is a local HTTP server answering its documented endpoints; socat
and argocd are fake executables that record what they were given.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from clusters.hooks import claims_in, cluster_document, environment
from tests.factories import make_cluster

pytestmark = pytest.mark.django_db(databases=["postgres", "sqlite"])

EXAMPLES = Path(settings.BASE_DIR) / "docs" / "hooks"


def run_hook(
    name: str, operation: str, env: dict[str, str], **fields: Any
) -> subprocess.CompletedProcess[str]:
    cluster = make_cluster(name="dev", **fields)
    state = {"delete": "absent", "stop": "stopped"}.get(operation, "running")
    document = cluster_document(cluster, state)
    return subprocess.run(
        [str(EXAMPLES / name)],
        input=json.dumps(document),
        env={**environment(document, operation), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


class Portainer(BaseHTTPRequestHandler):
    environments: list[dict[str, Any]] = []
    requests: list[tuple[str, str, str, bytes]] = []

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.requests.append((self.command, self.path, self.headers["X-API-Key"], body))

    def do_GET(self) -> None:
        self._record()
        self._answer(200, self.environments)

    def do_POST(self) -> None:
        self._record()
        self.environments.append({"Id": 7, "Name": "dev"})
        self._answer(200, {"Id": 7, "Name": "dev"})

    def do_DELETE(self) -> None:
        self._record()
        self.environments.clear()
        self._answer(204, None)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def portainer() -> Iterator[str]:
    Portainer.environments, Portainer.requests = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Portainer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_portainer_hook_adds_an_agent_environment_once_and_removes_it(
    portainer: str,
) -> None:
    env = {"PORTAINER_URL": portainer, "PORTAINER_TOKEN": "ptr_secret"}
    created = run_hook("10-portainer", "create", env, server_ip="10.1.2.3")
    assert (created.returncode, created.stdout) == (
        0,
        "kindler: registered portainer environment 7 at tcp://10.1.2.3:9001\n",
    )
    assert claims_in(created.stdout) == {
        "portainer": {"state": "registered", "detail": "environment 7 at tcp://10.1.2.3:9001"}
    }
    (get, search, key, _), (post, path, post_key, body) = Portainer.requests
    assert (get, search, key) == ("GET", "/api/endpoints?name=dev", "ptr_secret")
    assert (post, path, post_key) == ("POST", "/api/endpoints", "ptr_secret")
    fields = dict(
        (part.split(b'name="')[1].split(b'"')[0].decode(), part.split(b"\r\n\r\n")[1][:-2].decode())
        for part in body.split(b"--")
        if b"Content-Disposition" in part
    )
    assert fields == {
        "Name": "dev",
        "EndpointCreationType": "2",
        "URL": "tcp://10.1.2.3:9001",
        "TLS": "true",
        "TLSSkipVerify": "true",
        "TLSSkipClientVerify": "true",
    }
    Portainer.requests.clear()
    started = subprocess.run(
        [str(EXAMPLES / "10-portainer")],
        input=json.dumps({"name": "dev", "register_portainer": True, "server_ip": None}),
        env={**os.environ, **env, "KINDLER_OPERATION": "start"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.stdout == "kindler: registered portainer environment 7\n"
    assert [request[0] for request in Portainer.requests] == ["GET"]
    deleted = subprocess.run(
        [str(EXAMPLES / "10-portainer")],
        input=json.dumps({"name": "dev", "register_portainer": False, "server_ip": None}),
        env={**os.environ, **env, "KINDLER_OPERATION": "delete"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert deleted.stdout == "kindler: unregistered portainer environment 7\n"
    assert Portainer.requests[-1][:2] == ("DELETE", "/api/endpoints/7")


def test_the_portainer_hook_fails_without_its_settings() -> None:
    done = run_hook("10-portainer", "create", {"PORTAINER_URL": "", "PORTAINER_TOKEN": ""})
    assert (done.returncode, done.stdout) == (
        1,
        "PORTAINER_URL and PORTAINER_TOKEN are not set: nothing registered\n",
    )


def test_the_portainer_hook_does_nothing_for_a_cluster_that_did_not_ask() -> None:
    done = run_hook("10-portainer", "create", {}, register_portainer=False)
    assert (done.returncode, done.stdout) == (0, "")


@pytest.fixture
def fake_tools(tmp_path: Path) -> Path:
    """A folder first on PATH with socat and argocd that record their input."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "socat").write_text(f'#!/bin/sh\ncat >> "{tmp_path}/socat.log"\necho\n')
    (bin_dir / "argocd").write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/argocd.log"\n')
    for tool in ("socat", "argocd"):
        (bin_dir / tool).chmod(0o755)
    return tmp_path


def test_the_haproxy_hook_maps_the_cluster_host_to_its_http_port(fake_tools: Path) -> None:
    map_file = fake_tools / "kindler.map"
    map_file.write_text("other.localtest.me 127.0.0.1:9999\n")
    env = {
        "PATH": f"{fake_tools / 'bin'}:{os.environ['PATH']}",
        "HAPROXY_SOCKET": str(fake_tools / "admin.sock"),
        "HAPROXY_MAP": str(map_file),
    }
    done = run_hook("20-haproxy-route", "create", env, http_port=18080)
    assert (done.returncode, done.stdout) == (
        0,
        "kindler: registered haproxy http://dev.localtest.me/ -> 127.0.0.1:18080\n",
    )
    assert (fake_tools / "socat.log").read_text() == (
        f"del map {map_file} dev.localtest.me\n"
        f"add map {map_file} dev.localtest.me 127.0.0.1:18080\n"
    )
    assert map_file.read_text() == (
        "other.localtest.me 127.0.0.1:9999\ndev.localtest.me 127.0.0.1:18080\n"
    )


def test_the_haproxy_hook_removes_the_route_on_delete(fake_tools: Path) -> None:
    map_file = fake_tools / "kindler.map"
    map_file.write_text("dev.localtest.me 127.0.0.1:18080\nother.localtest.me 127.0.0.1:9\n")
    env = {
        "PATH": f"{fake_tools / 'bin'}:{os.environ['PATH']}",
        "HAPROXY_SOCKET": str(fake_tools / "admin.sock"),
        "HAPROXY_MAP": str(map_file),
    }
    done = run_hook("20-haproxy-route", "delete", env)
    assert done.stdout == "kindler: unregistered haproxy http://dev.localtest.me/\n"
    assert map_file.read_text() == "other.localtest.me 127.0.0.1:9\n"


def test_the_argocd_hook_adds_the_provider_context_under_the_cluster_name(
    fake_tools: Path,
) -> None:
    env = {"PATH": f"{fake_tools / 'bin'}:{os.environ['PATH']}"}
    done = run_hook("30-argocd", "create", env, provider="kind")
    assert (done.returncode, done.stdout) == (0, "kindler: registered argocd dev\n")
    assert (fake_tools / "argocd.log").read_text() == (
        "cluster add kind-dev --name dev --upsert --yes\n"
    )


def test_the_argocd_hook_removes_a_cluster_argo_cd_knows(fake_tools: Path) -> None:
    env = {"PATH": f"{fake_tools / 'bin'}:{os.environ['PATH']}"}
    done = run_hook("30-argocd", "delete", env)
    assert done.stdout == "kindler: unregistered argocd dev\n"
    assert (fake_tools / "argocd.log").read_text() == "cluster get dev\ncluster rm dev --yes\n"
