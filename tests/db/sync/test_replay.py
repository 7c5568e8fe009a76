from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client

from clusters.models import Cluster, OperationLog
from kindler.db.failover.monitor import State, monitor
from kindler.db.failover.pinning import pinned_alias
from kindler.db.models import AppliedEntry, JournalEntry
from kindler.db.sync import runs
from kindler.db.sync.journal import instance_id
from kindler.db.sync.mirror import mirror
from kindler.db.sync.replay import replay
from tests.conftest import BOTH, wait_for_state
from tests.db.sync.syncing import (
    conflicts,
    journal_length,
    kindler,
    local_change,
    on_postgres,
    remote_change,
    settings_base_dir,
    shared_cluster,
)
from tests.factories import make_cluster
from tests.pgserver import PostgresServer

TOKEN = "outage-test-token"

pytestmark = pytest.mark.django_db(databases=BOTH)


def test_an_insert_reaches_postgres_with_its_uid_and_version() -> None:
    with pinned_alias("sqlite"):
        local = make_cluster(name="dev")
    replay()
    remote = on_postgres("dev")
    assert (remote.uid, remote.version) == (local.uid, local.version)


def test_an_update_on_the_base_version_applies() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    replay()
    assert (on_postgres("dev").desired_state, on_postgres("dev").version) == ("stopped", 2)


def as_a_restore(*statements: str) -> None:
    """Run SQL on PostgreSQL with its triggers off, as pg_restore leaves a database."""
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            for sql in statements:
                cursor.execute(sql)
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")


def test_an_update_of_a_row_postgres_lost_without_deleting_it_writes_it_back() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    # A replaced or restored database: the row is gone and no delete was recorded.
    as_a_restore(
        f"DELETE FROM clusters_cluster WHERE uid = '{cluster.uid}'",
        f"DELETE FROM clusters_portclaim WHERE cluster_uid = '{cluster.uid}'",
    )
    report = replay()
    assert (report.pushed, report.conflicts, conflicts()) == (1, 0, [])
    assert (on_postgres("dev").desired_state, on_postgres("dev").uid) == ("stopped", cluster.uid)


def test_an_update_over_an_older_restored_copy_applies_the_local_row() -> None:
    cluster = shared_cluster(name="dev", http_port=18090)
    local_change(cluster, http_port=18095)
    local_change(cluster, desired_state="stopped")
    # Restored from a backup taken before the local copy's base version.
    as_a_restore(f"UPDATE clusters_cluster SET version = 1 WHERE uid = '{cluster.uid}'")
    report = replay()
    assert (report.conflicts, conflicts()) == (0, [])
    remote = on_postgres("dev")
    assert (remote.http_port, remote.desired_state, remote.version) == (18095, "stopped", 3)


def test_an_update_of_a_row_postgres_deleted_is_still_a_conflict() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    Cluster.objects.using("postgres").filter(uid=cluster.uid).delete()
    replay()
    assert conflicts() == [("update/delete", "dev")]


def test_a_delete_on_the_base_version_applies() -> None:
    cluster = shared_cluster(name="dev")
    with pinned_alias("sqlite"):
        cluster.delete()
    replay()
    assert not Cluster.objects.using("postgres").filter(name="dev").exists()


def test_changes_replay_in_order() -> None:
    with pinned_alias("sqlite"):
        cluster = make_cluster(name="dev")
        cluster.desired_state = "stopped"
        cluster.save()
        Cluster.objects.filter(name="dev").update(http_port=28080)
    report = replay()
    assert (report.pushed, report.conflicts) == (3, 0)
    assert (on_postgres("dev").desired_state, on_postgres("dev").http_port) == ("stopped", 28080)


def test_replayed_entries_leave_the_journal_and_are_recorded() -> None:
    with pinned_alias("sqlite"):
        make_cluster()
        make_cluster()
    replay()
    assert journal_length() == 0
    recorded = AppliedEntry.objects.using("postgres").filter(instance_id=instance_id())
    assert list(recorded.values_list("outcome", flat=True)) == ["applied", "applied"]


def test_an_entry_already_recorded_is_not_applied_again() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, http_port=28080)
    kept = list(JournalEntry.objects.using("sqlite").values())
    replay()
    remote_change("dev", http_port=38080)
    # As if the replay had been killed after PostgreSQL's commit, before
    # SQLite forgot the entry: the same entry is met again.
    JournalEntry.objects.using("sqlite").bulk_create([JournalEntry(**row) for row in kept])
    report = replay()
    assert (report.pushed, report.skipped, report.conflicts) == (0, 1, 0)
    assert on_postgres("dev").http_port == 38080


def test_an_unexpected_error_stops_the_replay_and_keeps_the_journal() -> None:
    with pinned_alias("sqlite"):
        make_cluster()
    JournalEntry.objects.using("sqlite").update(model="clusters.nosuchmodel")
    with pytest.raises(LookupError):
        replay()
    assert journal_length() == 1
    last = runs.last(runs.REPLAY)
    assert last is not None
    assert (last.ok, last.result.startswith("failed: ")) == (False, True)


def test_a_dry_run_changes_nothing() -> None:
    with pinned_alias("sqlite"):
        make_cluster(name="dev")
    report = replay(dry_run=True)
    assert (report.pushed, journal_length()) == (1, 1)
    assert not Cluster.objects.using("postgres").filter(name="dev").exists()


def test_a_clean_replay_records_no_conflict() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, http_port=28080)
    replay()
    assert conflicts() == []


def test_recovery_is_a_recovery_hook() -> None:
    assert "kindler.db.sync.recovery.recover" in settings.KINDLER_RECOVERY_HOOKS


def api(client: Client, method: str, path: str, body: dict[str, object] | None = None) -> int:
    response = getattr(client, method)(
        path,
        data=json.dumps(body) if body is not None else None,
        content_type="application/json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    return int(response.status_code)


def operations_in_postgres() -> list[tuple[str, str]]:
    rows = OperationLog.objects.using("postgres").order_by("cluster_name", "operation")
    return list(rows.values_list("cluster_name", "operation"))


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_changes_made_during_an_outage_reach_postgres(
    pg: PostgresServer, client: Client, settings: Any, kindler_env: dict[str, Any]
) -> None:
    settings.KINDLER_API_TOKEN = TOKEN
    User.objects.db_manager("postgres").create_superuser("root", password="pw-12345678")
    for name in ("edited", "stopped", "removed"):
        make_cluster(using="postgres", name=name)
    mirror()
    pg.stop()
    wait_for_state(State.FALLBACK)
    connections["postgres"].close()
    body = {"name": "web-1", "http_port": 41080, "https_port": 41443, "pf_port": 41000}
    assert api(client, "post", "/api/clusters", body) == 202
    assert api(client, "patch", "/api/clusters/edited", {"http_port": 42080}) == 200
    assert client.login(username="root", password="pw-12345678")
    removed = Cluster.objects.using("sqlite").get(name="removed")
    response = client.post(f"/admin/clusters/cluster/{removed.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    kindler(
        kindler_env, "cluster", "create", "cli-1", "--http-port", "43080", "--https-port", "43443"
    )
    kindler(kindler_env, "cluster", "stop", "stopped")
    pg.start()
    wait_for_state(State.PRIMARY)
    names = list(
        Cluster.objects.using("postgres").values_list("name", "desired_state", "http_port")
    )
    assert sorted(names) == [
        ("cli-1", "present", 43080),
        ("edited", "present", 42080),
        # The admin marks a cluster for deletion; the reconciler removes it.
        ("removed", "absent", removed.http_port),
        ("stopped", "stopped", Cluster.objects.using("postgres").get(name="stopped").http_port),
        ("web-1", "present", 41080),
    ]
    assert operations_in_postgres() == [
        ("cli-1", "create"),
        ("removed", "delete"),
        ("stopped", "stop"),
        ("web-1", "create"),
    ]
    assert (journal_length(), conflicts(), monitor.active_alias()) == (0, [], "postgres")


def start_replay(env: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "sync_db", "--push"],
        cwd=str(settings_base_dir()),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def applied_count() -> int:
    with psycopg2_connection() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kindler_db_appliedentry")
        return int(cursor.fetchone()[0])


def psycopg2_connection() -> Any:
    import psycopg2

    db = django_settings.DATABASES["postgres"]
    return psycopg2.connect(
        host=db["HOST"],
        port=db["PORT"],
        dbname=db["NAME"],
        user=db["USER"],
        password=db["PASSWORD"],
        connect_timeout=2,
    )


def wait_for_progress(process: subprocess.Popen[str], total: int) -> int:
    """Wait until the replay has applied some, not all, entries; return how many."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        done = applied_count()
        if 0 < done < total:
            return done
        time.sleep(0.02)
    raise AssertionError(f"replay never got halfway (exit {process.poll()})")


CRASH_ENTRIES = 20000


def journal_for_a_crash() -> list[uuid.UUID]:
    """Journal CRASH_ENTRIES changes: inserts, each then updated once."""
    count = CRASH_ENTRIES // 2
    with pinned_alias("sqlite"):
        OperationLog.objects.bulk_create(
            [OperationLog(cluster_name=f"c{i}", operation="create") for i in range(count)]
        )
        OperationLog.objects.update(status="running")
    return list(OperationLog.objects.using("sqlite").values_list("uid", flat=True))


def assert_applied_exactly_once(uids: list[uuid.UUID]) -> None:
    rows = OperationLog.objects.using("postgres")
    assert rows.count() == len(uids)
    # bulk_create leaves version 0; the update made it 1.
    assert list(rows.order_by().values_list("status", "version").distinct()) == [("running", 1)]
    assert (applied_count(), journal_length(), conflicts()) == (CRASH_ENTRIES, 0, [])


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_replay_killed_halfway_applies_everything_once_on_restart(
    kindler_env: dict[str, Any],
) -> None:
    uids = journal_for_a_crash()
    process = start_replay(kindler_env)
    wait_for_progress(process, CRASH_ENTRIES)
    process.kill()
    process.wait()
    kindler(kindler_env, "sync_db", "--push")
    assert_applied_exactly_once(uids)


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_server_killed_during_replay_loses_nothing_and_doubles_nothing(
    pg: PostgresServer, kindler_env: dict[str, Any]
) -> None:
    uids = journal_for_a_crash()
    process = start_replay(kindler_env)
    wait_for_progress(process, CRASH_ENTRIES)
    pg.kill()
    _, err = process.communicate(timeout=60)
    assert (process.returncode, "Sync stopped, the journal is kept" in err) == (1, True)
    connections["postgres"].close()
    pg.start()
    # This process is an instance of Kindler too: its recovery replays the rest.
    wait_for_state(State.PRIMARY, timeout=60)
    assert_applied_exactly_once(uids)
