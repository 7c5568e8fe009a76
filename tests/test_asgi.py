"""The ASGI entry point (kindler/asgi.py): bodies received with a deadline, then Django."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from clusters import listing
from kindler import asgi
from kindler.asgi import announced_length, application, has_body, wsgi_environ
from tests.conftest import BOTH, WebServer, wait_for
from tests.factories import make_cluster

TOKEN = "asgi-test-token-" + "x" * 32
SLOW_BODY = (
    b"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\na"
)


def scope(headers: list[tuple[bytes, bytes]], path: str = "/api/health") -> dict[str, object]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"a=1&b=%C3%A9",
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("10.0.0.7", 51000),
        "headers": headers,
    }


def test_the_environ_carries_the_request() -> None:
    environ = wsgi_environ(
        scope([(b"content-type", b"application/json"), (b"content-length", b"2")]), b"{}"
    )
    assert (
        environ["REQUEST_METHOD"],
        environ["PATH_INFO"],
        environ["QUERY_STRING"],
        environ["SERVER_NAME"],
        environ["SERVER_PORT"],
        environ["SERVER_PROTOCOL"],
        environ["REMOTE_ADDR"],
        environ["CONTENT_TYPE"],
        environ["CONTENT_LENGTH"],
        environ["wsgi.url_scheme"],
        environ["wsgi.input"].read(),
    ) == (
        "POST",
        "/api/health",
        "a=1&b=%C3%A9",
        "127.0.0.1",
        "8000",
        "HTTP/1.1",
        "10.0.0.7",
        "application/json",
        "2",
        "http",
        b"{}",
    )


def test_the_path_reaches_wsgi_as_latin_1_characters_of_its_utf_8_bytes() -> None:
    assert wsgi_environ(scope([], path="/clusters/é"), b"")["PATH_INFO"] == "/clusters/Ã©"


def test_headers_sent_twice_are_joined() -> None:
    environ = wsgi_environ(
        scope(
            [
                (b"x-forwarded-for", b"10.0.0.1"),
                (b"x-forwarded-for", b"10.0.0.2"),
                (b"cookie", b"a=1"),
                (b"cookie", b"b=2"),
            ]
        ),
        b"",
    )
    assert (environ["HTTP_X_FORWARDED_FOR"], environ["HTTP_COOKIE"]) == (
        "10.0.0.1,10.0.0.2",
        "a=1; b=2",
    )


def test_the_process_environment_is_not_in_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_PASSWORD", "not-for-requests")
    assert "PG_PASSWORD" not in wsgi_environ(scope([]), b"")


@pytest.mark.parametrize(
    ("value", "expected"), [(b"12", 12), (b"0", 0), (b"-1", None), (b"1e3", None), (b"", None)]
)
def test_only_a_whole_content_length_counts(value: bytes, expected: int | None) -> None:
    assert announced_length(scope([(b"content-length", value)])) == expected


def test_without_content_length_nothing_is_announced() -> None:
    assert announced_length(scope([(b"content-type", b"text/plain")])) is None


def read_answer(sock: socket.socket) -> bytes:
    """Return what the server sent before closing the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


@pytest.fixture
def body_timeout() -> str:
    """KINDLER_BODY_TIMEOUT of slow_server; a test that needs another overrides it."""
    return "2"


@pytest.fixture
def slow_server(start_web_server: Callable[..., WebServer], body_timeout: str) -> WebServer:
    """A web server of 2 workers x 2 threads that waits body_timeout seconds for a body."""
    server = start_web_server(
        KINDLER_API_TOKEN=TOKEN, KINDLER_THREADS="2", KINDLER_BODY_TIMEOUT=body_timeout
    )
    wait_for(server.answers)
    return server


@pytest.fixture
def slow_bodies(slow_server: WebServer) -> Iterator[list[socket.socket]]:
    """Twelve connections, three per request thread, that announce a body and send one byte."""
    sockets = []
    for _ in range(12):
        sock = socket.create_connection(("127.0.0.1", slow_server.port), timeout=30)
        sock.sendall(SLOW_BODY)
        sockets.append(sock)
    yield sockets
    for sock in sockets:
        sock.close()


def unanswered(sock: socket.socket) -> bool:
    """Return True when the server has neither answered nor closed sock yet."""
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_body_not_received_in_time_is_answered_408_and_dropped(
    slow_server: WebServer, slow_bodies: list[socket.socket]
) -> None:
    with ThreadPoolExecutor(max_workers=len(slow_bodies)) as pool:
        answers = list(pool.map(read_answer, slow_bodies))
    assert {answer.split(b"\r\n", 1)[0] for answer in answers} == {b"HTTP/1.1 408 Request Timeout"}
    assert {answer.split(b"\r\n\r\n", 1)[1] for answer in answers} == {
        b"The request body was not received in time.\n"
    }


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
@pytest.mark.parametrize("body_timeout", ["120"])
def test_requests_are_answered_while_slow_bodies_are_open(
    slow_server: WebServer, slow_bodies: list[socket.socket]
) -> None:
    # Each slow body would hold a request thread if it were read there: three
    # times as many as the server has, all still open while these are asked.
    answered = [
        slow_server.get("/api/health")[0],
        slow_server.get("/api/clusters", TOKEN)[0],
        slow_server.get("/api/health", TOKEN)[0],
    ]
    still_open = [unanswered(sock) for sock in slow_bodies]
    assert (answered, still_open) == ([200, 200, 200], [True] * len(slow_bodies))


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_body_sent_in_pieces_within_the_time_is_read_whole(slow_server: WebServer) -> None:
    body = b'{"name": "pieces", "provider": "k3d"}'
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/clusters HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(0.5)
        sock.sendall(body[10:])
        answer = read_answer(sock)
    assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 202 Accepted"
    assert slow_server.get("/api/clusters/pieces", TOKEN)[0] == 200


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_body_announced_over_the_limit_is_refused_unread(slow_server: WebServer) -> None:
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/clusters HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n".encode()
            + b"Content-Length: 100000000\r\n\r\n{"
        )
        answer = read_answer(sock)
    assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 413 Payload Too Large"
    assert (
        answer.split(b"\r\n\r\n", 1)[1]
        == b'{"detail": "Request body is larger than 2621440 bytes"}'
    )


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_chunked_body_past_the_limit_is_answered_413(slow_server: WebServer) -> None:
    chunk = b"x" * 65536
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/clusters HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\r\n".encode()
        )
        answer = b""
        # 2.5 MiB is the limit: 41 chunks of 64 KiB are past it.
        with contextlib.suppress(OSError):
            for _ in range(41):
                sock.sendall(b"10000\r\n" + chunk + b"\r\n")
        answer = read_answer(sock)
    assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 413 Payload Too Large"
    assert answer.split(b"\r\n\r\n", 1)[1] == b"The request body is too large.\n"


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_streamed_answer_reaches_the_client_whole(slow_server: WebServer) -> None:
    # More clusters than clusters/listing.py puts in one piece: the list is streamed.
    made = sorted(make_cluster().name for _ in range(listing.PIECE + 1))
    status, body = slow_server.get("/api/clusters", TOKEN)
    assert (status, sorted(cluster["name"] for cluster in json.loads(body))) == (200, made)


def test_a_client_gone_before_its_body_is_not_handed_to_django() -> None:
    sent: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    request = scope([(b"content-length", b"100")])
    asyncio.run(application(request, receive, send))
    assert (sent, messages, asgi._threads) == ([], [], None)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], False),
        ([(b"content-length", b"0")], False),
        ([(b"content-length", b"12")], True),
        ([(b"transfer-encoding", b"chunked")], True),
    ],
)
def test_only_a_request_that_frames_a_body_has_one(
    headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    assert has_body(scope(headers)) is expected


def blocked(until: threading.Event) -> str:
    """Wait for until in a request thread; return the thread's name."""
    until.wait(30)
    return threading.current_thread().name


def test_the_thread_idle_the_shortest_takes_the_next_request() -> None:
    async def run() -> tuple[list[str], str]:
        loop = asyncio.get_running_loop()
        pool = asgi.RequestThreads(3)
        releases = [threading.Event() for _ in range(3)]
        futures = [pool.run(loop, blocked, release) for release in releases]
        names = []
        for index in (0, 2, 1):
            releases[index].set()
            names.append(await futures[index])
        return names, await pool.run(loop, lambda: threading.current_thread().name)

    names, next_name = asyncio.run(run())
    assert (len(set(names)), next_name) == (3, names[-1])


def test_a_request_past_the_thread_count_waits_for_the_first_thread_free() -> None:
    async def run() -> tuple[str, str, bool]:
        loop = asyncio.get_running_loop()
        pool = asgi.RequestThreads(2)
        first, second = threading.Event(), threading.Event()
        held = pool.run(loop, blocked, first)
        freed = pool.run(loop, blocked, second)
        waiting = pool.run(loop, lambda: (threading.current_thread().name, first.is_set()))
        second.set()
        freed_name = await freed
        waiting_name, first_done = await waiting
        first.set()
        await held
        return freed_name, waiting_name, first_done

    freed_name, waiting_name, first_done = asyncio.run(run())
    assert (waiting_name, first_done) == (freed_name, False)


def test_an_error_in_a_request_thread_is_raised_where_the_request_waits() -> None:
    def fail() -> None:
        raise ValueError("raised in the thread")

    async def run() -> None:
        await asgi.RequestThreads(1).run(asyncio.get_running_loop(), fail)

    with pytest.raises(ValueError, match=r"^raised in the thread$"):
        asyncio.run(run())
