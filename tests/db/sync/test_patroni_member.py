"""KINDLER_PATRONI_API names the Patroni member Kindler writes to (kindler.db.sync.patroni)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kindler.db.sync import patroni
from kindler.db.sync.identity import Node
from tests.pgserver import free_port

CLUSTER = {
    "members": [
        {"name": "pg1", "role": "replica", "host": "10.0.0.5", "port": 5432, "timeline": 2},
        {"name": "pg2", "role": "leader", "host": "10.0.0.6", "port": 5432, "timeline": 2},
    ]
}


class Patroni(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(CLUSTER if self.path == "/cluster" else {}).encode()
        self.send_response(200 if self.path == "/cluster" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Patroni)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    patroni.forget()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    patroni.forget()


def node(server: str) -> Node:
    return Node(server, 7, 2, 40, None)


def test_the_member_at_the_nodes_address_is_named(settings: Any, api: str) -> None:
    settings.KINDLER_PATRONI_API = api
    named = patroni.named(node("10.0.0.5:5432"))
    assert (str(named), named.as_json()["member"] if named else None) == (
        "10.0.0.5:5432 (member pg1, system 7, timeline 2)",
        "pg1",
    )


def test_a_node_patroni_lists_by_another_address_is_the_leader_of_its_timeline(
    settings: Any, api: str
) -> None:
    settings.KINDLER_PATRONI_API = api
    named = patroni.named(node("192.168.1.6:5432"))
    assert str(named) == "192.168.1.6:5432 (member pg2, system 7, timeline 2)"


def test_the_first_api_that_answers_is_asked(settings: Any, api: str) -> None:
    settings.KINDLER_PATRONI_API = f"http://127.0.0.1:{free_port()}, {api}/"
    named = patroni.named(node("10.0.0.6:5432"))
    assert str(named) == "10.0.0.6:5432 (member pg2, system 7, timeline 2)"


def test_no_api_answering_names_no_member(settings: Any) -> None:
    settings.KINDLER_PATRONI_API = f"http://127.0.0.1:{free_port()}"
    patroni.forget()
    named = patroni.named(node("10.0.0.6:5432"))
    assert (str(named), named.as_json()["member"] if named else "") == (
        "10.0.0.6:5432 (system 7, timeline 2)",
        None,
    )


def test_without_the_setting_patroni_is_not_asked(settings: Any, api: str) -> None:
    settings.KINDLER_PATRONI_API = ""
    assert (patroni.named(node("10.0.0.5:5432")), patroni._asked) == (node("10.0.0.5:5432"), {})
