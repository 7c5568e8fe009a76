"""A journal written by an earlier release replays into this one (the same SQLite file).

An earlier checkout of Kindler (a `git worktree` of a past commit, run with
the shared virtualenv) migrates its own PostgreSQL database and SQLite file,
journals writes while PostgreSQL cannot be reached, and stops. This code then
starts on the same SQLite file: it migrates the file and PostgreSQL, and
replays the journal, giving the columns the entries lack their defaults.

And code from before a column (clusters_cluster.host) keeps writing and
replaying its own journal on today's schema: the column's database default
takes its rows (expand/contract).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from clusters.models import Cluster, OperationLog
from kindler import __version__
from kindler.db.failover.pinning import pinned_alias
from kindler.db.models import JournalEntry
from kindler.db.sync.replay import replay
from tests.conftest import BOTH
from tests.earlier import ROOT, checkout, environment, manage
from tests.factories import make_cluster, make_operation
from tests.pgserver import PostgresServer, free_port

pytestmark = pytest.mark.slow

# Main a week before journal entries recorded their schema (0.1.0 code with
# placement, roles and hooks; before tombstones and kindler_schema). Earlier
# commits shipped placeholder migrations under names later filled in: a
# database they migrated cannot be migrated forward by name.
EARLIER = "008a9f2"
WRITES = 12


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A checkout of EARLIER beside the repository, sharing its virtualenv."""
    with checkout(EARLIER, tmp_path_factory.mktemp("earlier") / "kindler") as folder:
        yield folder


def postgres_rows(
    pg_server: PostgresServer, database: str, columns: str = "name, host, http_port"
) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(**pg_server.connect_kwargs(database))
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT {columns} FROM clusters_cluster ORDER BY name")
            return cursor.fetchall()
    finally:
        conn.close()


def test_a_journal_of_earlier_code_replays_into_this_one(
    earlier: Path, pg_server: PostgresServer, tmp_path: Path
) -> None:
    database = "earlier_" + secrets.token_hex(4)
    pg_server.create_database(database)
    sqlite = tmp_path / "kindler.db"
    env = environment(pg_server, database, sqlite)
    manage(earlier, env, "migrate", "-v", "0")
    # The outage: nothing listens where PostgreSQL was.
    away = {**env, "PG_PORT": str(free_port())}
    expected = []
    for number in range(WRITES):
        port = 21000 + 3 * number
        name = f"earlier-{number:02d}"
        manage(
            earlier,
            away,
            "cluster",
            "create",
            name,
            "--http-port",
            str(port),
            "--https-port",
            str(port + 1),
            "--pf-port",
            str(port + 2),
        )
        expected.append((name, "docker-earlier", port))
    with sqlite3.connect(sqlite) as db:
        (journaled,) = db.execute("SELECT count(*) FROM kindler_db_journalentry").fetchone()
    assert journaled >= WRITES
    assert postgres_rows(pg_server, database, "name") == []

    # This code, on the same SQLite file, with PostgreSQL back.
    manage(ROOT, env, "migrate", "-v", "0")
    with sqlite3.connect(sqlite) as db:
        schemas = {row[0] for row in db.execute("SELECT schema FROM kindler_db_journalentry")}
    assert schemas == {""}
    manage(ROOT, env, "sync_db")
    assert postgres_rows(pg_server, database) == expected
    with sqlite3.connect(sqlite) as db:
        (left,) = db.execute("SELECT count(*) FROM kindler_db_journalentry").fetchone()
    assert left == 0


@pytest.mark.django_db(databases=BOTH)
def test_an_entry_says_which_code_wrote_it() -> None:
    with pinned_alias("sqlite"):
        make_cluster(name="dev")
    assert list(JournalEntry.objects.using("sqlite").values_list("schema", flat=True)) == [
        __version__
    ]


@pytest.mark.django_db(databases=BOTH)
def test_columns_an_entry_lacks_get_their_database_defaults() -> None:
    with pinned_alias("sqlite"):
        local = make_cluster(name="dev", host="docker-1")
        make_operation(local)
    for entry in JournalEntry.objects.using("sqlite"):
        # As the triggers of code from before these columns wrote it.
        data = json.loads(entry.data or "{}")
        del data["host" if entry.model == "clusters.cluster" else "hooks"]
        entry.data, entry.schema = json.dumps(data), ""
        entry.save(using="sqlite")
    replay()
    assert list(Cluster.objects.using("postgres").values_list("name", "host")) == [("dev", "")]
    assert list(OperationLog.objects.using("postgres").values_list("cluster_name", "hooks")) == [
        ("dev", None)
    ]


# Main before placement: its clusters_cluster had no host column at all.
BEFORE_PLACEMENT = "ac295d7"


@pytest.fixture(scope="module")
def before_placement(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with checkout(BEFORE_PLACEMENT, tmp_path_factory.mktemp("placement") / "kindler") as folder:
        yield folder


def test_code_from_before_a_column_writes_and_replays_on_todays_schema(
    before_placement: Path, pg_server: PostgresServer, tmp_path: Path
) -> None:
    database = "placement_" + secrets.token_hex(4)
    pg_server.create_database(database)
    today = environment(pg_server, database, tmp_path / "today.db")
    manage(ROOT, today, "migrate", "-v", "0")
    env = environment(pg_server, database, tmp_path / "earlier.db")
    manage(before_placement, env, "migrate", "--database", "sqlite", "-v", "0")
    ports = ["--http-port", "21000", "--https-port", "21001", "--pf-port", "21002"]
    manage(before_placement, env, "cluster", "create", "online", *ports)
    away = {**env, "PG_PORT": str(free_port())}
    ports = ["--http-port", "21003", "--https-port", "21004", "--pf-port", "21005"]
    manage(before_placement, away, "cluster", "create", "journaled", *ports)
    assert postgres_rows(pg_server, database) == [("online", "", 21000)]
    manage(before_placement, env, "sync_db")
    assert postgres_rows(pg_server, database) == [("journaled", "", 21003), ("online", "", 21000)]
