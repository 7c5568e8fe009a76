from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from clusters.models import Cluster, OperationLog
from kindler.db.failover.pinning import pinned_alias
from kindler.db.models import Conflict, KnownDatabase, SyncRun
from kindler.db.sync import runs
from kindler.db.sync.journal import journal_suppressed
from kindler.db.sync.replay import replay
from tests.conftest import BOTH
from tests.db.sync.syncing import (
    journal_length,
    local_change,
    on_postgres,
    remote_change,
    shared_cluster,
)
from tests.factories import make_cluster
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture(autouse=True)
def _first_contact() -> None:
    """Start every test as a SQLite file that has not mirrored this PostgreSQL yet.

    Recovery in the background may have remembered it meanwhile; the first
    run is then incremental instead of full.
    """
    KnownDatabase.objects.using("sqlite").all().delete()


def sync_db(*args: str) -> str:
    out = StringIO()
    call_command("sync_db", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def a_conflict(**remote: object) -> Conflict:
    """Make an update/update conflict on cluster dev and return it."""
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    remote_change("dev", **(remote or {"desired_state": "absent", "http_port": 28080}))
    replay()
    return Conflict.objects.using("postgres").get()


def test_pushes_and_pulls_and_reports() -> None:
    with pinned_alias("sqlite"):
        make_cluster(name="dev")
    assert sync_db() == (
        "Pushed 1, skipped 0, conflicts 0 (of 1 journaled).\n"
        "Pulled 0, deleted 0, skipped 0 (full); accounts changed 0.\n"
        "Pending changes: 0. Open conflicts: 0.\n"
    )


def test_push_only_replays_the_journal() -> None:
    with pinned_alias("sqlite"):
        make_cluster(name="dev")
    assert sync_db("--push") == (
        "Pushed 1, skipped 0, conflicts 0 (of 1 journaled).\n"
        "Pending changes: 0. Open conflicts: 0.\n"
    )


def test_pull_only_mirrors() -> None:
    make_cluster(using="postgres", name="dev")
    assert sync_db("--pull") == (
        "Pulled 1, deleted 0, skipped 0 (full); accounts changed 0.\n"
        "Pending changes: 0. Open conflicts: 0.\n"
    )
    assert Cluster.objects.using("sqlite").get().name == "dev"


def test_a_dry_run_changes_nothing() -> None:
    with pinned_alias("sqlite"):
        make_cluster(name="dev")
    assert sync_db("--dry-run", "--push") == (
        "Dry run: Pushed 1, skipped 0, conflicts 0 (of 1 journaled).\n"
        "Pending changes: 1. Open conflicts: 0.\n"
    )
    assert (journal_length(), Cluster.objects.using("postgres").count()) == (1, 0)


def test_json_output() -> None:
    with pinned_alias("sqlite"):
        make_cluster(name="dev")
    report = json.loads(sync_db("--json", "--push"))
    assert report == {
        "push": {
            "total": 1,
            "pushed": 1,
            "skipped": 0,
            "conflicts": 0,
            "merged": 0,
            "dry_run": False,
        },
        "pull": None,
        "push_all": None,
        "open_conflicts": 0,
        "conflicts": [],
        "pending": 0,
    }


def test_exit_status_is_2_while_conflicts_remain() -> None:
    a_conflict()
    with pytest.raises(CommandError, match=r"^1 conflict\(s\) remain\.$") as caught:
        sync_db("--push")
    assert caught.value.returncode == 2


def test_resolve_keeping_postgres_leaves_its_row() -> None:
    conflict = a_conflict()
    assert sync_db("--resolve", str(conflict.uid), "--keep", "remote") == (
        f"Conflict {conflict.uid} (update/update on dev) resolved: kept PostgreSQL's.\n"
    )
    assert (on_postgres("dev").desired_state, on_postgres("dev").http_port) == ("absent", 28080)
    assert Conflict.objects.using("postgres").get().resolution == "remote"


def test_applying_local_takes_every_local_field_and_a_newer_version() -> None:
    conflict = a_conflict(desired_state="absent", http_port=28080)
    local_port = conflict.local["http_port"] if conflict.local else None
    sync_db("--resolve", str(conflict.uid), "--keep", "local")
    row = on_postgres("dev")
    assert (row.desired_state, row.http_port, row.version) == ("stopped", local_port, 3)


def test_applying_a_local_delete_deletes_the_row() -> None:
    cluster = shared_cluster(name="dev")
    with pinned_alias("sqlite"):
        cluster.delete()
    remote_change("dev", http_port=28080)
    replay()
    conflict = Conflict.objects.using("postgres").get()
    sync_db("--resolve", str(conflict.uid), "--keep", "local")
    assert not Cluster.objects.using("postgres").filter(name="dev").exists()


def test_applying_a_local_insert_replaces_the_row_holding_its_name() -> None:
    with pinned_alias("sqlite"):
        mine = make_cluster(name="dev", http_port=28080, https_port=28443)
    make_cluster(using="postgres", name="dev", http_port=38080, https_port=38443)
    replay()
    conflict = Conflict.objects.using("postgres").get()
    sync_db("--resolve", str(conflict.uid), "--keep", "local")
    assert (on_postgres("dev").uid, on_postgres("dev").http_port) == (mine.uid, 28080)


def test_resolving_an_unknown_conflict_fails() -> None:
    with pytest.raises(CommandError, match=r"^No conflict 00000000-0000-0000-0000-000000000000\.$"):
        sync_db("--resolve", "00000000-0000-0000-0000-000000000000", "--keep", "local")


def test_resolving_twice_fails() -> None:
    conflict = a_conflict()
    sync_db("--resolve", str(conflict.uid), "--keep", "remote")
    with pytest.raises(CommandError, match=r"was already resolved \(kept PostgreSQL's\)\.$"):
        sync_db("--resolve", str(conflict.uid), "--keep", "local")


def test_resolve_needs_keep() -> None:
    with pytest.raises(CommandError, match=r"^--resolve needs --keep local or --keep remote\.$"):
        sync_db("--resolve", "00000000-0000-0000-0000-000000000000")


def test_long_runs_show_a_progress_bar() -> None:
    with pinned_alias("sqlite"):
        OperationLog.objects.bulk_create(
            [OperationLog(cluster_name="dev", operation="create") for _ in range(1000)]
        )
    err = StringIO()
    call_command("sync_db", "--push", stdout=StringIO(), stderr=err)
    assert err.getvalue().endswith(f"\r[{'#' * 30}] 1000/1000\n")


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_an_unreachable_postgres_is_an_error(pg: PostgresServer) -> None:
    pg.stop()
    # The connection opened before the stop is dead: the flush after the test needs a new one.
    connections["postgres"].close()
    with pytest.raises(CommandError, match=r"^PostgreSQL cannot be reached: "):
        sync_db()


def test_runs_are_kept_as_a_history_of_the_last_hundred() -> None:
    for number in range(runs.KEPT + 5):
        runs.record(runs.MIRROR, ok=True, result=f"run {number}", duration_ms=1.0)
    last = runs.last(runs.MIRROR)
    assert (SyncRun.objects.using("sqlite").count(), last.result if last else None) == (
        runs.KEPT,
        f"run {runs.KEPT + 4}",
    )
    assert [run.result for run in runs.history(2)] == [
        f"run {runs.KEPT + 4}",
        f"run {runs.KEPT + 3}",
    ]


def test_a_failed_run_keeps_the_last_success() -> None:
    runs.record(runs.REPLAY, ok=True, result="ok", duration_ms=1.0)
    runs.record(runs.REPLAY, ok=False, result="failed: x", duration_ms=1.0)
    last = runs.last(runs.REPLAY)
    assert last is not None
    assert (last.ok, last.last_success_at is not None) == (False, True)


def test_migrate_says_what_it_will_carry_into_a_postgres_without_clusters() -> None:
    with journal_suppressed():
        make_cluster(using="sqlite", name="dev")
    out = StringIO()
    call_command("migrate", stdout=out, stderr=StringIO())
    path = connections["sqlite"].settings_dict["NAME"]
    assert out.getvalue().splitlines()[-1] == (
        "PostgreSQL holds no clusters yet: Kindler will carry the 1 clusters, "
        f"0 operation logs and 0 accounts of {path} into it when it starts "
        "(or run `scripts/manage sync_db --push --all`)."
    )


def test_postgres_only_mode_has_nothing_to_sync(settings: object) -> None:
    settings.KINDLER_FALLBACK = "off"  # type: ignore[attr-defined]
    with pytest.raises(CommandError) as caught:
        call_command("sync_db", stdout=StringIO())
    assert str(caught.value) == (
        "PostgreSQL-only mode (KINDLER_FALLBACK=off): SQLite holds nothing to sync."
    )
