from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import close_old_connections, connections
from django.test import Client

from clusters.models import Cluster
from kindler.db.failover import state
from kindler.db.failover.middleware import BUSY
from kindler.db.failover.monitor import State, monitor
from kindler.db.models import JournalEntry
from kindler.db.sync.journal import journal_suppressed
from tests import urls as probe_urls
from tests.conftest import BOTH, wait_for_state
from tests.factories import make_cluster
from tests.faults import HeldLock, SqliteLock, held_open, read_only
from tests.pgserver import PostgresServer

SQLITE_LOCKED = (
    "The local SQLite file is locked by another program, so nothing was saved. Retry in a moment."
)
SQLITE_READ_ONLY = (
    "The local SQLite file cannot be written (read-only file or folder), so nothing was saved."
)

pytestmark = [
    pytest.mark.django_db(databases=BOTH, transaction=True),
    pytest.mark.urls("tests.urls"),
]


@pytest.fixture
def client() -> Client:
    """A client that, like a real server, does not re-raise handled exceptions."""
    return Client(raise_request_exception=False)


@pytest.fixture
def frozen_monitor(pg: PostgresServer) -> Iterator[PostgresServer]:
    """Stop background probing, so only a failing request can notice the outage."""
    monitor.stop()
    yield pg
    probe_urls.after_write = None
    monitor.reset()


def test_requests_are_served_from_postgres_while_it_is_healthy(client: Client) -> None:
    assert client.get("/probe/count").json() == {"count": 0, "alias": "postgres"}


def test_a_read_that_loses_postgres_is_answered_from_sqlite(
    client: Client, frozen_monitor: PostgresServer
) -> None:
    # A row only the local copy has, as the mirror writes it.
    with journal_suppressed():
        Cluster.objects.using("sqlite").create(name="local-only", http_port=20001)
    frozen_monitor.stop("immediate")
    response = client.get("/probe/count")
    assert (response.status_code, response.json()) == (200, {"count": 1, "alias": "sqlite"})
    assert monitor.snapshot().state is State.FALLBACK


def test_a_write_that_cannot_connect_is_saved_on_sqlite(
    client: Client, frozen_monitor: PostgresServer
) -> None:
    frozen_monitor.stop("immediate")
    response = client.post("/probe/create", {"name": "dev"})
    assert (response.status_code, response.json()["alias"]) == (201, "sqlite")
    assert list(Cluster.objects.using("sqlite").values_list("name", flat=True)) == ["dev"]


def test_a_write_interrupted_before_commit_is_rolled_back_and_saved_on_sqlite(
    client: Client, frozen_monitor: PostgresServer
) -> None:
    probe_urls.after_write = frozen_monitor.kill
    response = client.post("/probe/create", {"name": "dev", "then_read": "1"})
    assert (response.status_code, response.json()["alias"]) == (201, "sqlite")
    local = list(Cluster.objects.using("sqlite").values_list("name", "uid"))
    frozen_monitor.ensure_running()
    wait_for_state(State.PRIMARY)
    # The rolled-back attempt left nothing in PostgreSQL: the one row there is
    # the SQLite one, carried over by the journal replay.
    assert list(Cluster.objects.using("postgres").values_list("name", "uid")) == local
    assert [name for name, _ in local] == ["dev"]


def test_a_write_whose_commit_fails_gets_a_503_and_is_not_retried(
    client: Client, frozen_monitor: PostgresServer
) -> None:
    probe_urls.after_write = frozen_monitor.kill
    response = client.post("/probe/create", {"name": "dev"}, HTTP_ACCEPT="application/json")
    assert (response.status_code, response.json()) == (
        503,
        {
            "detail": "PostgreSQL went away while this change was being committed, so it may "
            "not have been saved. Check, then retry."
        },
    )
    assert list(Cluster.objects.using("sqlite").values_list("name", flat=True)) == []


def test_the_503_page_for_a_browser_is_html(client: Client, frozen_monitor: PostgresServer) -> None:
    probe_urls.after_write = frozen_monitor.kill
    response = client.post("/probe/create", {"name": "dev"})
    assert (response.status_code, response["Content-Type"]) == (503, "text/html; charset=utf-8")
    assert b"it may not have been saved" in response.content


@pytest.fixture
def short_lock_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give up on a lock someone holds after 200 ms instead of PG_LOCK_TIMEOUT."""
    options = settings.DATABASES["postgres"]["OPTIONS"]
    monkeypatch.setitem(options, "options", "-c statement_timeout=5000 -c lock_timeout=200")
    connections["postgres"].close()


@pytest.fixture
def locked_cluster(short_lock_timeout: None, pg_server: PostgresServer) -> Iterator[Cluster]:
    """A cluster whose row another program holds FOR UPDATE."""
    cluster = make_cluster(name="dev")
    held = HeldLock(
        pg_server,
        settings.DATABASES["postgres"]["NAME"],
        f"SELECT 1 FROM {Cluster._meta.db_table} WHERE uid = %s FOR UPDATE",
        [str(cluster.uid)],
    )
    held.inject()
    yield cluster
    held.recover()


@pytest.fixture
def locked_sqlite(
    frozen_monitor: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """An outage, with SQLite's write lock held by another program and a 100 ms busy timeout."""
    frozen_monitor.stop("immediate")
    monitor.mark_down("test: PostgreSQL stopped")
    monkeypatch.setitem(settings.DATABASES["sqlite"]["OPTIONS"], "timeout", 0.1)
    connections["sqlite"].close()
    lock = SqliteLock(Path(settings.DATABASES["sqlite"]["NAME"]))
    lock.inject()
    yield
    lock.recover()
    # Drop the connection made with the short timeout.
    connections["sqlite"].close()


def test_a_write_to_a_row_someone_holds_locked_answers_busy(
    client: Client, locked_cluster: Cluster
) -> None:
    response = client.post(
        "/probe/rename",
        {"uid": str(locked_cluster.uid), "name": "renamed"},
        HTTP_ACCEPT="application/json",
    )
    assert (response.status_code, response.json()) == (503, {"detail": BUSY})


def test_a_row_someone_holds_locked_is_no_reason_to_fall_back(
    client: Client, locked_cluster: Cluster
) -> None:
    before = state.read()
    client.post("/probe/rename", {"uid": str(locked_cluster.uid), "name": "renamed"})
    shared = state.read()
    assert (shared, monitor.active_alias()) == (before, "postgres")
    assert shared is not None
    assert shared.state is State.PRIMARY


def test_a_write_on_a_locked_sqlite_file_answers_503_json_under_api(
    client: Client, locked_sqlite: None
) -> None:
    response = client.post("/api/probe/create", {"name": "dev"})
    assert (response.status_code, response.json()) == (503, {"detail": SQLITE_LOCKED})


def test_a_write_on_a_locked_sqlite_file_answers_503_html_to_a_browser(
    client: Client, locked_sqlite: None
) -> None:
    response = client.post("/probe/create", {"name": "dev"})
    assert (response.status_code, response["Content-Type"]) == (503, "text/html; charset=utf-8")
    assert SQLITE_LOCKED.encode() in response.content


def test_a_write_on_a_locked_sqlite_file_saves_nothing(client: Client, locked_sqlite: None) -> None:
    client.post("/probe/create", {"name": "dev"})
    assert (
        Cluster.objects.using("sqlite").count(),
        JournalEntry.objects.using("sqlite").count(),
    ) == (0, 0)


@pytest.fixture
def switch_back_while_waiting(frozen_monitor: PostgresServer) -> Iterator[None]:
    """Fall back, then turn primary while the next request waits for SQLite's write lock."""
    monitor.mark_down("test: outage")

    def switch_back(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("BEGIN"):
            state.switch({State.FALLBACK}, State.PRIMARY, "recovery finished")
        return execute(sql, params, many, context)

    with connections["sqlite"].execute_wrapper(switch_back):
        yield


def test_a_write_that_finds_the_instance_back_on_postgres_is_served_there(
    client: Client, switch_back_while_waiting: None
) -> None:
    response = client.post("/probe/create", {"name": "dev"})
    assert (response.status_code, response.json()["alias"]) == (201, "postgres")


def test_a_write_that_finds_the_instance_back_on_postgres_leaves_no_journal(
    client: Client, switch_back_while_waiting: None
) -> None:
    client.post("/probe/create", {"name": "dev"})
    assert (
        list(Cluster.objects.using("postgres").values_list("name", flat=True)),
        JournalEntry.objects.using("sqlite").count(),
    ) == (["dev"], 0)


@pytest.fixture
def sqlite_in_an_outage(frozen_monitor: PostgresServer) -> Iterator[Path]:
    """An outage, with the SQLite file held open by another process, as other workers do."""
    frozen_monitor.stop("immediate")
    monitor.mark_down("test: PostgreSQL stopped")
    path = Path(settings.DATABASES["sqlite"]["NAME"])
    connections["sqlite"].close()
    with held_open(path):
        yield path
    connections["sqlite"].close()


def test_a_write_after_the_sqlite_file_was_read_only_is_saved_once_it_is_writable(
    client: Client, sqlite_in_an_outage: Path
) -> None:
    # The request opens SQLite while the file is read-only: its connection is too.
    with read_only(sqlite_in_an_outage):
        refused = client.post("/api/probe/create", {"name": "dev"})
    # What Django's handlers do when a request ends (the test client leaves it out).
    close_old_connections()
    saved = client.post("/api/probe/create", {"name": "uat"})
    assert (
        refused.status_code,
        refused.json(),
        saved.status_code,
        saved.json()["alias"],
        list(Cluster.objects.using("sqlite").values_list("name", flat=True)),
    ) == (503, {"detail": SQLITE_READ_ONLY}, 201, "sqlite", ["uat"])
