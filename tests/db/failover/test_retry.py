"""Work outside a request survives a server restart between calls (kindler/db/failover/retry.py)."""

from __future__ import annotations

import pytest
from django.db import DataError, OperationalError, connections

from kindler.db.failover.retry import on_live_connection
from tests.conftest import BOTH
from tests.faults import admin_connection
from tests.pgserver import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(databases=BOTH, transaction=True)]


def backend_pid() -> int:
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def test_a_connection_the_server_ended_is_replaced_and_the_work_done_once_more(
    pg: PostgresServer,
) -> None:
    before = backend_pid()
    # What a restart does to a kept connection, without the monitor seeing an outage.
    admin = admin_connection(pg)
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [before])
    admin.close()
    calls: list[int] = []

    def work() -> int:
        calls.append(1)
        return backend_pid()

    after = on_live_connection("postgres", work)
    assert (len(calls), after != before) == (2, True)


def test_a_new_connection_that_fails_is_not_tried_again(pg: PostgresServer) -> None:
    connections["postgres"].close()
    pg.stop()
    calls: list[int] = []

    def work() -> int:
        calls.append(1)
        return backend_pid()

    with pytest.raises(OperationalError):
        on_live_connection("postgres", work)
    assert calls == [1]


def test_other_errors_are_not_retried(pg: PostgresServer) -> None:
    backend_pid()
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        with connections["postgres"].cursor() as cursor:
            cursor.execute("SELECT 1 / 0")

    with pytest.raises(DataError, match="division by zero"):
        on_live_connection("postgres", work)
    assert calls == [1]
