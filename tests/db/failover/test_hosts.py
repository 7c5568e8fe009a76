"""A host list (PG_HOST=a,b): the roles Kindler reports; a promoted standby takes the writes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from itertools import count
from typing import Any

import psycopg2
import pytest
from django.core.exceptions import ImproperlyConfigured

from kindler.db.failover.hosts import Host, parse_hosts
from tests.db.failover.conftest import DATABASE, LiveKindler, Pair


def test_one_port_serves_every_host() -> None:
    assert parse_hosts("db1,db2", "5432") == (Host("db1", 5432), Host("db2", 5432))


def test_each_host_takes_its_own_port() -> None:
    assert parse_hosts("db1, db2", "5432, 5433") == (Host("db1", 5432), Host("db2", 5433))


def test_a_port_list_of_another_length_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="PG_PORT lists 3 ports for 2 hosts"):
        parse_hosts("db1,db2", "5432,5433,5434")


def test_a_port_that_is_no_number_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="PG_PORT has an invalid port: 'x'"):
        parse_hosts("db1", "x")


def test_an_ipv6_address_is_shown_in_brackets() -> None:
    assert Host("::1", 5432).address == "[::1]:5432"


def roles(database: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(h["address"], h["role"], h["active"]) for h in database["postgres"]["hosts"]]


@pytest.mark.slow
def test_health_lists_the_primary_as_active_and_the_standby(
    pair: Pair, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(pair.hosts, pair.ports)
    status, body = kindler.health()
    primary, standby = (f"127.0.0.1:{pair.primary.port}", f"127.0.0.1:{pair.standby.port}")
    assert (status, body["database"]["postgres"]["host"], roles(body["database"])) == (
        "200",
        primary,
        [(primary, "primary", True), (standby, "standby", False)],
    )


@pytest.mark.slow
def test_dbstatus_lists_every_host_with_its_role(
    pair: Pair, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(pair.hosts, pair.ports)
    lines = kindler.manage("dbstatus").stdout.splitlines()
    hosts = lines[lines.index("Hosts:") + 1 : lines.index("Hosts:") + 3]
    assert [line.split(": ")[0].split() for line in hosts] == [
        [f"127.0.0.1:{pair.primary.port}", "primary", "(active)"],
        [f"127.0.0.1:{pair.standby.port}", "standby"],
    ]


class Writer:
    """Create clusters through the API as fast as it answers; remember what was acknowledged."""

    def __init__(self, kindler: LiveKindler) -> None:
        self.kindler = kindler
        self.acknowledged: list[tuple[float, str]] = []
        self.refused: list[tuple[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.ports = count(20000, 3)

    def run(self) -> None:
        for index in count():
            if self.stop.is_set():
                return
            name, port = f"w-{index}", next(self.ports)
            status, answer = self.kindler.call(
                "POST",
                "/api/clusters",
                {"name": name, "http_port": port, "https_port": port + 1, "pf_port": port + 2},
            )
            if status == "202":
                self.acknowledged.append((time.monotonic(), name))
            else:
                self.refused.append((status, answer))
                time.sleep(0.05)


def names_on(server: Any) -> set[str]:
    conn = psycopg2.connect(**server.connect_kwargs(DATABASE), connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT name FROM clusters_cluster")
            return {row[0] for row in cursor.fetchall()}
    finally:
        conn.close()


def wait_for_health(kindler: LiveKindler, check: Callable[[dict[str, Any]], bool]) -> float:
    """Poll /api/health until check(database) holds; return when it did (monotonic)."""
    deadline = time.monotonic() + 60
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, body = kindler.health()
        if status == "200" and check(body["database"]):
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"Kindler's health never showed what was waited for: {body}")


@pytest.mark.slow
def test_a_promoted_standby_takes_every_acknowledged_write(
    pair: Pair, start_kindler: Callable[..., LiveKindler]
) -> None:
    kindler = start_kindler(pair.hosts, pair.ports)
    new_primary = f"127.0.0.1:{pair.standby.port}"
    writer = Writer(kindler)
    writer.thread.start()
    time.sleep(1.5)
    killed = time.monotonic()
    pair.primary.kill()
    time.sleep(1.0)
    promoted = time.monotonic()
    pair.standby.promote()
    on_new_primary = wait_for_health(
        kindler,
        lambda db: (
            db["active"] == "postgres"
            and db["postgres"]["host"] == new_primary
            and db["sync"]["journal"]["pending"] == 0
        ),
    )
    time.sleep(1.5)
    writer.stop.set()
    writer.thread.join(timeout=60)
    _, body = kindler.health()
    after = [name for at, name in writer.acknowledged if at > on_new_primary]
    during = [name for at, name in writer.acknowledged if killed <= at <= on_new_primary]
    print(
        f"writes on the new primary {on_new_primary - promoted:.2f} s after the promote, "
        f"{on_new_primary - killed:.2f} s after the kill; acknowledged before/during/after: "
        f"{len(writer.acknowledged) - len(during) - len(after)}/{len(during)}/{len(after)}; "
        f"refused: {writer.refused[:3]}"
    )
    missing = {name for _, name in writer.acknowledged} - names_on(pair.standby)
    switches = json.loads(kindler.manage("dbstatus", "--json").stdout)["switches"]
    moves = [entry["cause"] for entry in switches if "host" in entry]
    assert (missing, bool(during), bool(after), body["database"]["postgres"]["host"], moves) == (
        set(),
        True,
        True,
        new_primary,
        [f"primary moved from 127.0.0.1:{pair.primary.port} to {new_primary}"],
    )
