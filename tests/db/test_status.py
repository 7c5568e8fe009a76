"""The sync part of /api/health and dbstatus, and the banner's counts."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from kindler.db.mirror import mirror
from kindler.db.replay import replay
from kindler.db.routing import pinned_alias
from kindler.db.status import database_report
from tests.conftest import BOTH
from tests.db.syncing import local_change, remote_change, shared_cluster
from tests.factories import make_cluster, make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)


def sync() -> Any:
    return database_report()["sync"]


def test_pending_changes_and_the_oldest_are_reported() -> None:
    with pinned_alias("sqlite"):
        make_cluster()
        make_cluster()
    journal = sync()["journal"]
    assert journal["pending"] == 2
    assert journal["oldest"].endswith("Z")


def test_open_conflicts_are_reported() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    remote_change("dev", http_port=28080)
    replay()
    assert sync()["open_conflicts"] == 1


def test_the_last_replay_is_reported() -> None:
    with pinned_alias("sqlite"):
        make_cluster()
    replay()
    last = sync()["last_replay"]
    assert (last["ok"], last["result"]) == (True, "pushed 1, skipped 0, conflicts 0")


def test_the_last_mirror_and_its_lag_are_reported() -> None:
    mirror()
    report = sync()
    assert (report["last_mirror"]["ok"], report["mirror_lag_seconds"] >= 0) == (True, True)


def test_nothing_is_reported_before_any_run() -> None:
    assert sync() == {
        "journal": {"pending": 0, "oldest": None},
        "open_conflicts": 0,
        "last_replay": None,
        "last_mirror": None,
        "mirror_lag_seconds": None,
    }


def test_health_endpoint_has_the_sync_report(client: Client) -> None:
    with pinned_alias("sqlite"):
        make_cluster()
    body = json.loads(client.get("/api/health").content)
    assert body["database"]["sync"]["journal"]["pending"] == 1


def test_dbstatus_prints_the_sync_lines() -> None:
    out = StringIO()
    call_command("dbstatus", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[-5:] == [
        "Journal:         0 pending",
        "Open conflicts:  0",
        "Last replay:     never",
        "Last mirror:     never",
        "Mirror lag:      never mirrored",
    ]


def test_the_banner_shows_pending_changes(client: Client) -> None:
    client.force_login(make_superuser())
    with pinned_alias("sqlite"):
        make_cluster()
    html = client.get("/").content.decode()
    assert "1 change made during the outage waiting to be synced." in html


def test_the_banner_shows_open_conflicts(client: Client) -> None:
    client.force_login(make_superuser())
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    remote_change("dev", http_port=28080)
    replay()
    html = client.get("/").content.decode()
    assert 'href="/admin/kindler_db/conflict/">1 conflict</a> to resolve' in html
