"""Kindler's PostgreSQL backend: BEGIN and SAVEPOINT travel with the next statement."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from django.db import IntegrityError, ProgrammingError, connections, transaction
from django.test.utils import CaptureQueriesContext
from psycopg2 import extensions

from clusters.models import Cluster, PortClaim
from kindler.db.pool import _clean
from tests.conftest import BOTH
from tests.factories import cluster_fields
from tests.faults import admin_connection
from tests.pgserver import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(databases=BOTH, transaction=True)]


def sent(queries: CaptureQueriesContext) -> list[str]:
    """Return what each round trip sent, its statements cut to their first word."""
    return [
        ";".join(part.split()[0] for part in query["sql"].split(";"))
        for query in queries.captured_queries
    ]


def make_cluster(name: str, **fields: Any) -> None:
    """Save a cluster on PostgreSQL with one INSERT (no validation lookups)."""
    Cluster(**cluster_fields(name=name, **fields)).save(using="postgres")


def names() -> list[str]:
    return sorted(Cluster.objects.using("postgres").values_list("name", flat=True))


def status() -> int:
    return int(connections["postgres"].connection.info.transaction_status)


def test_the_first_statement_of_a_transaction_carries_its_begin() -> None:
    with (
        CaptureQueriesContext(connections["postgres"]) as queries,
        transaction.atomic(using="postgres"),
    ):
        before = status()
        count = Cluster.objects.using("postgres").count()
        during = status()
    assert (before, count, during, sent(queries)) == (
        extensions.TRANSACTION_STATUS_IDLE,
        0,
        extensions.TRANSACTION_STATUS_INTRANS,
        ["BEGIN;SELECT", "COMMIT"],
    )


def test_a_transaction_that_sends_nothing_costs_no_round_trip() -> None:
    connections["postgres"].ensure_connection()
    with (
        CaptureQueriesContext(connections["postgres"]) as queries,
        transaction.atomic(using="postgres"),
    ):
        pass
    assert sent(queries) == []


def test_a_savepoint_travels_with_the_next_statement() -> None:
    with (
        CaptureQueriesContext(connections["postgres"]) as queries,
        transaction.atomic(using="postgres"),
    ):
        Cluster.objects.using("postgres").count()
        with transaction.atomic(using="postgres"):
            make_cluster(name="dev")
    assert sent(queries) == ["BEGIN;SELECT", "SAVEPOINT;INSERT", "RELEASE", "COMMIT"]


def test_a_savepoint_left_before_any_statement_is_never_sent() -> None:
    with (
        CaptureQueriesContext(connections["postgres"]) as queries,
        transaction.atomic(using="postgres"),
    ):
        with transaction.atomic(using="postgres"):
            pass
        make_cluster(name="dev")
    assert (sent(queries), names()) == (["BEGIN;INSERT", "COMMIT"], ["dev"])


def test_a_refused_insert_rolls_back_to_its_savepoint_and_the_transaction_goes_on() -> None:
    with transaction.atomic(using="postgres"):
        make_cluster(name="dev")
        with pytest.raises(IntegrityError), transaction.atomic(using="postgres"):
            make_cluster(name="dev", http_port=18091, https_port=18454)
        make_cluster(name="uat", http_port=18092, https_port=18455)
    assert names() == ["dev", "uat"]


def test_a_value_the_driver_cannot_adapt_sends_nothing_and_the_next_statement_begins() -> None:
    with transaction.atomic(using="postgres"):
        with pytest.raises(ProgrammingError), connections["postgres"].cursor() as cursor:
            cursor.execute("SELECT %s", [object()])  # type: ignore[list-item]
        unbegun = status()
        make_cluster(name="dev")
        transaction.set_rollback(True, using="postgres")
    # Rolled back with the transaction: the INSERT did not run on its own.
    assert (unbegun, names()) == (extensions.TRANSACTION_STATUS_IDLE, [])


def test_a_statement_postgres_cannot_parse_leaves_the_transaction_and_savepoint_unbegun() -> None:
    with transaction.atomic(using="postgres"):
        with (
            pytest.raises(ProgrammingError),
            transaction.atomic(using="postgres"),
            connections["postgres"].cursor() as cursor,
        ):
            cursor.execute("SELEC 1")
        unbegun = status()
        make_cluster(name="dev")
    assert (unbegun, names()) == (extensions.TRANSACTION_STATUS_IDLE, ["dev"])


def test_a_rolled_back_transaction_leaves_nothing() -> None:
    with transaction.atomic(using="postgres"):
        make_cluster(name="dev")
        transaction.set_rollback(True, using="postgres")
    assert (names(), status()) == ([], extensions.TRANSACTION_STATUS_IDLE)


def test_a_pooled_connection_given_back_inside_a_transaction_is_rolled_back(
    pg_server: PostgresServer,
) -> None:
    conn = admin_connection(pg_server)
    try:
        with conn.cursor() as cursor:
            cursor.execute("BEGIN; CREATE TEMPORARY TABLE left_behind (id int)")
        clean = _clean(conn)
        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regclass('pg_temp.left_behind') IS NULL")
            gone: Any = cursor.fetchone()
    finally:
        conn.close()
    assert (clean, gone) == (True, (True,))


CLAIM = "INSERT INTO clusters_portclaim (host, port, cluster_uid, field) VALUES (%s, %s, %s, %s)"


def test_a_copy_sent_first_in_a_transaction_is_rolled_back_with_it(
    request: pytest.FixtureRequest,
) -> None:
    rows = io.StringIO(f"docker-1\t20000\t{uuid.uuid4()}\thttp_port\n")
    # COPY cannot run under the deadline's wait callback (kindler.db.failover.timeouts).
    waiting = extensions.get_wait_callback()
    extensions.set_wait_callback(None)
    request.addfinalizer(lambda: extensions.set_wait_callback(waiting))
    with transaction.atomic(using="postgres"):
        with connections["postgres"].cursor() as cursor:
            cursor.cursor.copy_expert(
                "COPY clusters_portclaim (host, port, cluster_uid, field) FROM STDIN", rows
            )
        transaction.set_rollback(True, using="postgres")
    assert PortClaim.objects.using("postgres").count() == 0


def test_an_executemany_sent_first_in_a_transaction_is_rolled_back_with_it() -> None:
    rows = [("docker-1", port, str(uuid.uuid4()), "http_port") for port in (20000, 20001)]
    with transaction.atomic(using="postgres"):
        with connections["postgres"].cursor() as cursor:
            cursor.executemany(CLAIM, rows)
        transaction.set_rollback(True, using="postgres")
    assert PortClaim.objects.using("postgres").count() == 0
