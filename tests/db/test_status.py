"""The database status read model (kindler/db/status.py) and the banner that shows it."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from kindler.db.failover.monitor import State, monitor
from kindler.db.failover.pinning import pinned_alias
from kindler.db.status import SyncStatus, database_status
from kindler.db.sync import runs
from kindler.db.sync.mirror import mirror
from kindler.db.sync.replay import replay
from tests.conftest import BOTH, wait_for_state
from tests.db.sync.syncing import local_change, remote_change, shared_cluster
from tests.factories import make_cluster, make_superuser
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH)


def make_conflict() -> None:
    """Change one field differently on both sides, and replay."""
    local_change(shared_cluster(name="dev"), http_port=28081)
    remote_change("dev", http_port=28080)
    replay()


def sync() -> SyncStatus:
    status = database_status().sync
    assert status is not None
    return status


@pytest.mark.postgres
def test_pending_changes_and_the_oldest_are_reported() -> None:
    with pinned_alias("sqlite"):
        make_cluster()
        make_cluster()
    status = sync()
    assert (status.pending, status.oldest_pending is not None) == (2, True)


@pytest.mark.postgres
def test_open_conflicts_are_reported() -> None:
    make_conflict()
    assert sync().open_conflicts == 1


@pytest.mark.postgres
def test_the_last_replay_is_reported() -> None:
    with pinned_alias("sqlite"):
        make_cluster()
    replay()
    last = sync().last_replay
    assert last is not None
    assert (last.ok, last.result) == (True, "pushed 1, skipped 0, conflicts 0")


@pytest.mark.postgres
def test_the_last_mirror_and_its_lag_are_reported() -> None:
    mirror()
    status = sync()
    assert status.last_mirror is not None
    assert status.mirror_lag_seconds is not None
    assert (status.last_mirror.ok, status.mirror_lag_seconds >= 0) == (True, True)


@pytest.mark.postgres
def test_nothing_is_reported_before_any_run() -> None:
    assert database_status().as_json()["sync"] == {
        "journal": {"pending": 0, "oldest": None},
        "open_conflicts": 0,
        "last_replay": None,
        "last_mirror": None,
        "mirror_lag_seconds": None,
    }


@pytest.mark.postgres
def test_a_failed_replay_is_the_replay_failure() -> None:
    runs.record(runs.REPLAY, ok=False, result="failed: disk full", duration_ms=1.0)
    assert sync().replay_failure == "failed: disk full"


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_open_conflicts_are_unknown_while_postgres_is_away(pg: PostgresServer) -> None:
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    assert sync().open_conflicts is None


@pytest.mark.postgres
def test_the_state_and_its_cause_come_from_the_monitor() -> None:
    snapshot = monitor.snapshot()
    status = database_status(snapshot)
    assert (status.failover, status.active, status.degraded) == (snapshot, "postgres", False)


def test_the_json_says_why_the_state_is_what_it_is() -> None:
    report = database_status().as_json()
    assert (report["state"], report["state_cause"]) == ("primary", monitor.snapshot().cause)


def test_without_postgres_there_is_nothing_to_sync(settings) -> None:
    postgres = settings.DATABASES.pop("postgres", None)
    try:
        status = database_status()
    finally:
        if postgres is not None:
            settings.DATABASES["postgres"] = postgres
    assert (status.active, status.degraded, status.sync) == ("sqlite", False, None)


@pytest.mark.postgres
def test_dbstatus_prints_the_sync_lines() -> None:
    out = StringIO()
    call_command("dbstatus", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[-6:] == [
        "Journal:         0 pending",
        "Open conflicts:  0",
        "Last replay:     never",
        "Last mirror:     never",
        "Mirror lag:      never mirrored",
        "Recent runs:     none",
    ]


@pytest.mark.postgres
def test_the_health_endpoint_has_the_sync_report(client: Client) -> None:
    with pinned_alias("sqlite"):
        make_cluster()
    client.force_login(make_superuser())
    body = client.get("/api/health").json()
    assert body["database"]["sync"]["journal"]["pending"] == 1


@pytest.mark.postgres
def test_the_banner_shows_pending_changes(client: Client) -> None:
    client.force_login(make_superuser())
    with pinned_alias("sqlite"):
        make_cluster()
    html = client.get("/").content.decode()
    assert "1 change made during the outage waiting to be synced." in html


@pytest.mark.postgres
def test_the_banner_shows_open_conflicts(client: Client) -> None:
    client.force_login(make_superuser())
    make_conflict()
    html = client.get("/").content.decode()
    assert 'href="/admin/kindler_db/conflict/">1 conflict</a> to resolve' in html


def test_no_banner_without_postgres(client: Client, settings) -> None:
    client.force_login(make_superuser())
    postgres = settings.DATABASES.pop("postgres", None)
    try:
        html = client.get("/").content.decode()
    finally:
        if postgres is not None:
            settings.DATABASES["postgres"] = postgres
    assert 'id="database-banner"' not in html
