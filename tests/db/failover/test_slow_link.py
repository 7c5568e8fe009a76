"""PostgreSQL behind a slow link: a write is saved whole or refused as too slow, never half."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.db.failover.conftest import DATABASE, LiveKindler
from tests.db.failover.test_hosts import names_on, wait_for_health
from tests.pgserver import PostgresServer
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow


def too_slow(deadline: float) -> str:
    return (
        f"PostgreSQL is too slow: this request did not finish within {deadline:g} s "
        "(KINDLER_REQUEST_DEADLINE). Nothing was saved; retry in a moment."
    )


@pytest.fixture
def slow_link() -> Iterator[tuple[PostgresServer, TcpProxy]]:
    """A PostgreSQL reached through a proxy whose latency the test sets."""
    server = PostgresServer()
    server.init()
    server.start()
    server.create_database(DATABASE)
    proxy = TcpProxy(server.host, server.port)
    yield server, proxy
    proxy.close()
    server.destroy()


def create(kindler: LiveKindler, index: int) -> tuple[str, str, Any]:
    name, port = f"slow-{index}", 21000 + 3 * index
    status, answer = kindler.call(
        "POST",
        "/api/clusters",
        {"name": name, "http_port": port, "https_port": port + 1, "pf_port": port + 2},
    )
    return name, status, answer


# A round trip of 1.2 s: longer than PG_CONNECT_TIMEOUT (1 s), so the probe
# takes PostgreSQL for unreachable and writes go to SQLite. A round trip of
# 0.3 s: the probe passes, but a write's round trips add up past a 1 s deadline.
@pytest.mark.parametrize(("delay", "deadline"), [(0.6, 3.0), (0.15, 1.0)])
def test_writes_over_a_slow_link_are_saved_whole_or_refused_as_too_slow(
    slow_link: tuple[PostgresServer, TcpProxy],
    start_kindler: Callable[..., LiveKindler],
    delay: float,
    deadline: float,
) -> None:
    server, proxy = slow_link
    kindler = start_kindler("127.0.0.1", str(proxy.port), KINDLER_REQUEST_DEADLINE=str(deadline))
    wait_for_health(kindler, lambda db: db["active"] == "postgres")
    proxy.delay = delay
    answers: list[tuple[str, str, Any]] = []
    writers = [
        threading.Thread(target=lambda i=index: answers.append(create(kindler, i)))
        for index in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    proxy.delay = 0.0
    wait_for_health(
        kindler, lambda db: db["state"] == "primary" and db["sync"]["journal"]["pending"] == 0
    )
    saved = names_on(server)
    # Acknowledged (202) means saved, in PostgreSQL or journaled and replayed;
    # a 503 says the deadline passed, and then nothing of the write is anywhere.
    # Any other answer (a 500) leaves the expected list one short.
    got = sorted(
        (name, status, name in saved, status == "503" and answer["detail"] == too_slow(deadline))
        for name, status, answer in answers
    )
    expected = sorted(
        (name, status, status == "202", status == "503")
        for name, status, _ in answers
        if status in ("202", "503")
    )
    assert (len(answers), got) == (4, expected)
