"""Kindler in front of a real Patroni cluster, under a stream of creates: nothing acknowledged lost.

Two PostgreSQL nodes under Patroni (etcd as its store, asynchronous
replication, Patroni's default), HAProxy with compose/haproxy-patroni.cfg's
checks, Kindler (two workers) writing through HAProxy. Each fault ends with
every acknowledged create on the leader, no 500 and no conflict of Kindler
with itself.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.db.failover.conftest import LiveKindler, start_kindler
from tests.db.failover.test_hosts import Writer, wait_for_health
from tests.patroni import PatroniCluster, binaries_missing, wait_until

__all__ = ["start_kindler"]

pytestmark = pytest.mark.slow


@pytest.fixture
def patroni() -> Iterator[PatroniCluster]:
    missing = binaries_missing()
    if missing:
        pytest.skip(f"needs Debian's {', '.join(missing)} (scripts/test installs them as root)")
    cluster = PatroniCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def writing(
    patroni: PatroniCluster, start_kindler: Callable[..., LiveKindler]
) -> Iterator[tuple[LiveKindler, Writer]]:
    """Kindler through HAProxy, with creates streaming in for 1.5 s before the test acts."""
    api = ",".join(node.rest for node in patroni.nodes)
    kindler = start_kindler("127.0.0.1", str(patroni.haproxy_port), KINDLER_PATRONI_API=api)
    writer = Writer(kindler)
    writer.thread.start()
    time.sleep(1.5)
    yield kindler, writer
    writer.stop.set()
    writer.thread.join(timeout=60)


def on_postgres(database: dict[str, Any]) -> bool:
    return bool(
        database["active"] == "postgres"
        and database["state"] == "primary"
        and database["sync"]["journal"]["pending"] == 0
    )


def settle(patroni: PatroniCluster, kindler: LiveKindler, writer: Writer, fault: str) -> None:
    """Write on for a while, stop, and check every acknowledged create is on the leader."""
    wait_for_health(kindler, on_postgres)
    time.sleep(2.0)
    writer.stop.set()
    writer.thread.join(timeout=60)
    patroni.wait_for_replicas(timeout=120)
    wait_for_health(kindler, on_postgres)
    leader = patroni.leader()
    acknowledged = {name for _, name in writer.acknowledged}
    missing = sorted(acknowledged - patroni.names_on(leader))
    errors = [answer for status, answer in writer.refused if status == "500"]
    _, body = kindler.health()
    conflicts = body["database"]["sync"]["open_conflicts"]
    print(
        f"{fault}: {len(acknowledged)} acknowledged, {len(missing)} missing, "
        f"{len(writer.refused)} refused, leader {leader.name}"
    )
    assert (missing, errors, conflicts) == ([], [], 0)


def test_a_switchover_loses_nothing(
    patroni: PatroniCluster, writing: tuple[LiveKindler, Writer]
) -> None:
    kindler, writer = writing
    leader, candidate = patroni.leader(), patroni.replica()
    patroni.switchover(leader, candidate)
    wait_until(candidate.is_primary, 60, "the candidate never led")
    settle(patroni, kindler, writer, "switchover")
    # Behind HAProxy, Patroni's REST API names the member written to.
    _, body = kindler.health()
    assert body["database"]["postgres"]["node"]["member"] == candidate.name


def test_a_lost_leader_loses_nothing(
    patroni: PatroniCluster, writing: tuple[LiveKindler, Writer]
) -> None:
    kindler, writer = writing
    leader, replica = patroni.leader(), patroni.replica()
    leader.kill()
    wait_until(replica.is_primary, 90, "the replica never took over")
    leader.start()
    settle(patroni, kindler, writer, "leader lost")


def test_a_lost_leader_with_the_replica_behind_loses_nothing(
    patroni: PatroniCluster, writing: tuple[LiveKindler, Writer]
) -> None:
    kindler, writer = writing
    leader, replica = patroni.leader(), patroni.replica()
    senders = leader.walsender_pids()
    for pid in senders:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(4.0)
    before = {name for _, name in writer.acknowledged}
    leader.kill()
    wait_until(replica.is_primary, 90, "the replica never took over")
    lost = len(before - patroni.names_on(replica))
    print(f"the promoted replica lacked {lost} of {len(before)} acknowledged creates")
    leader.start()
    settle(patroni, kindler, writer, "leader lost, replica behind")
    assert (senders != [], lost > 0) == (True, True)


def test_etcd_lost_for_20_seconds_loses_nothing(
    patroni: PatroniCluster, writing: tuple[LiveKindler, Writer]
) -> None:
    kindler, writer = writing
    patroni.etcd.kill()
    # Patroni demotes the leader once it cannot renew its lock (no failsafe mode).
    wait_for_health(kindler, lambda database: database["active"] == "sqlite")
    time.sleep(20.0 - 5.0)
    patroni.etcd.start()
    settle(patroni, kindler, writer, "etcd lost 20 s")


def test_a_postgres_restart_by_patroni_loses_nothing(
    patroni: PatroniCluster, writing: tuple[LiveKindler, Writer]
) -> None:
    kindler, writer = writing
    patroni.restart_postgres(patroni.leader())
    settle(patroni, kindler, writer, "PostgreSQL restarted by Patroni")
