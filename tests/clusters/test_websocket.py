"""/ws/tasks (clusters/websocket.py) through `manage.py serve`, with a real WebSocket client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import websocket
from django.contrib.auth.models import User

from clusters.tasks import PHASES, STARTED_PROGRESS
from kindler import wsserver
from tests import served as running
from tests.conftest import BOTH, wait_for
from tests.pgserver import PostgresServer
from tests.served import PASSWORD, SERVER_HASHER, TOKEN, Served

serve = running.serve


def messages_until_finished(socket: websocket.WebSocket) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while not received or received[-1].get("task", {}).get("status") not in ("completed", "failed"):
        received.append(json.loads(socket.recv()))
    return received


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_subscriber_follows_a_create_to_completed(serve: Callable[..., Served]) -> None:
    # The fake k3d spreads its output over 3 s: the phases arrive one by one.
    served = serve(KINDLER_FAKE_SLEEP="3")
    socket = served.connect(f"Authorization: Bearer {TOKEN}")
    socket.send(json.dumps({"type": "ping"}))
    assert json.loads(socket.recv()) == {"type": "pong"}
    task_id = served.api("POST", "/api/clusters", {"name": "live"})["task_id"]
    socket.send(json.dumps({"type": "subscribe", "task_id": task_id}))
    assert json.loads(socket.recv()) == {"type": "subscribed", "task_id": task_id}

    received = messages_until_finished(socket)

    assert {message["type"] for message in received} == {"task_update"}
    tasks = [message["task"] for message in received]
    assert {task["task_id"] for task in tasks} == {task_id}
    progress = [task["progress"] for task in tasks]
    assert progress == sorted(set(progress))
    phases = {percent for _, percent in PHASES[("k3d", "create")]}
    assert set(progress[1:-1]) <= phases | {STARTED_PROGRESS}
    assert len(progress[1:-1]) >= 2
    assert (tasks[-1]["status"], tasks[-1]["progress"]) == ("completed", 100)
    assert tasks[-1] == served.api("GET", f"/api/tasks/{task_id}")
    # Finished: nothing more comes for it, and the socket still answers.
    socket.send(json.dumps({"type": "ping"}))
    assert json.loads(socket.recv()) == {"type": "pong"}
    # A socket that subscribes to a finished task gets its last state.
    other = served.connect(f"Authorization: Bearer {TOKEN}")
    other.send(json.dumps({"type": "subscribe", "task_id": task_id}))
    assert json.loads(other.recv()) == {"type": "subscribed", "task_id": task_id}
    assert json.loads(other.recv()) == {"type": "task_update", "task": tasks[-1]}


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_handshake_needs_the_token_or_a_session_from_this_site(
    serve: Callable[..., Served], settings: Any
) -> None:
    settings.PASSWORD_HASHERS = [SERVER_HASHER]
    User.objects.create_user("ada", password=PASSWORD)
    served = serve()
    session = served.sign_in("ada")
    cookie = f"Cookie: sessionid={session}"
    # The page's origin is the Host the socket is asked for (behind the
    # proxy, the one public name both go by).
    site = f"Origin: http://127.0.0.1:{served.ws_port}"

    assert served.refusal() == 403
    assert served.refusal("Authorization: Bearer wrong") == 403
    assert served.refusal(cookie) == 403
    assert served.refusal(cookie, "Origin: http://elsewhere.example") == 403
    assert served.refusal("Cookie: sessionid=made-up", site) == 403

    socket = served.connect(cookie, site)
    missing = "6b0f7c3e-0000-4000-8000-000000000000"
    socket.send(json.dumps({"type": "subscribe", "task_id": missing}))
    assert json.loads(socket.recv()) == {"type": "subscribed", "task_id": missing}
    assert json.loads(socket.recv()) == {
        "type": "error",
        "task_id": missing,
        "detail": f"Task {missing} not found",
    }
    socket.send("not json")
    assert json.loads(socket.recv()) == {"type": "error", "detail": "Messages must be JSON objects"}


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_socket_keeps_following_tasks_through_an_outage(
    serve: Callable[..., Served], pg: PostgresServer
) -> None:
    served = serve()
    socket = served.connect(f"Authorization: Bearer {TOKEN}")
    # Read once on PostgreSQL: the server's reading threads keep connections to it.
    before = served.api("POST", "/api/clusters", {"name": "before"})["task_id"]
    socket.send(json.dumps({"type": "subscribe", "task_id": before}))
    assert json.loads(socket.recv())["type"] == "subscribed"
    assert messages_until_finished(socket)[-1]["task"]["status"] == "completed"

    pg.stop()
    wait_for(lambda: served.health()["database"]["state"] == "fallback", seconds=60)
    during = served.api("POST", "/api/clusters", {"name": "during"})["task_id"]
    socket.send(json.dumps({"type": "subscribe", "task_id": during}))
    assert json.loads(socket.recv()) == {"type": "subscribed", "task_id": during}

    last = messages_until_finished(socket)[-1]["task"]
    assert (last["task_id"], last["status"], last["progress"]) == (during, "completed", 100)


def test_the_websocket_address_is_host_and_port_or_off() -> None:
    assert wsserver.split_ws_bind("127.0.0.1:8001") == ("127.0.0.1", 8001)
    assert wsserver.split_ws_bind(":8001") == ("0.0.0.0", 8001)
    assert wsserver.is_off({"KINDLER_WS_BIND": "off"}) is True
    assert wsserver.is_off({}) is False
    with pytest.raises(ValueError, match=r"^KINDLER_WS_BIND must be HOST:PORT or off, got 'x'$"):
        wsserver.split_ws_bind("x")
