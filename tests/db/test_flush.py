"""kindler.db.management.commands.flush: a TRUNCATE that deadlocks with a reader runs again."""

from __future__ import annotations

import re
import threading

import psycopg2
import pytest
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import connections

from clusters.models import Cluster
from tests.conftest import BOTH
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)


def truncated_tables() -> list[str]:
    """The tables flush empties on PostgreSQL, in the order its TRUNCATE locks them."""
    connection = connections["postgres"]
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    statement = next(
        sql for sql in connection.ops.sql_flush(no_style(), tables) if sql.startswith("TRUNCATE")
    )
    return re.findall(r'"(\w+)"', statement.split(" RESTART")[0])


def waiting_pid(reader: psycopg2.extensions.connection) -> int | None:
    with reader.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock'"
        )
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def test_a_flush_that_deadlocks_with_a_reader_runs_again_and_empties_the_tables(
    pg: PostgresServer,
) -> None:
    Cluster.objects.using("postgres").create(name="kept-until-flushed", http_port=20100)
    order = truncated_tables()
    first, last = order[0], order[-1]
    reader = psycopg2.connect(**pg.connect_kwargs(connections["postgres"].settings_dict["NAME"]))
    watcher = psycopg2.connect(**pg.connect_kwargs(connections["postgres"].settings_dict["NAME"]))
    watcher.autocommit = True
    errors: list[BaseException] = []

    def flush() -> None:
        try:
            call_command("flush", database="postgres", interactive=False, verbosity=0)
        except BaseException as error:
            errors.append(error)
        finally:
            connections["postgres"].close()

    try:
        with reader.cursor() as cursor:
            # The reader outwaits the flush: PostgreSQL ends the flush's side of the deadlock.
            cursor.execute("SET deadlock_timeout = '20s'")
            cursor.execute(f'SELECT count(*) FROM "{last}"')
            flushing = threading.Thread(target=flush)
            flushing.start()
            while waiting_pid(watcher) is None:
                flushing.join(0.05)
            # The flush holds the first table and waits for the last: reading
            # the first closes the cycle, and the flush's deadlock check fires.
            cursor.execute(f'SELECT count(*) FROM "{first}"')
        reader.commit()
        flushing.join(30)
    finally:
        reader.close()
        watcher.close()
    assert (errors, flushing.is_alive(), Cluster.objects.using("postgres").count()) == (
        [],
        False,
        0,
    )
