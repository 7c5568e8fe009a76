from __future__ import annotations

import pytest
from django.conf import settings

from clusters.models import Cluster
from kindler.db import runs
from kindler.db.journal import instance_id
from kindler.db.models import AppliedEntry, JournalEntry
from kindler.db.replay import replay
from kindler.db.routing import pinned_alias
from tests.conftest import BOTH
from tests.db.syncing import (
    conflicts,
    journal_length,
    local_change,
    on_postgres,
    remote_change,
    shared_cluster,
)
from tests.factories import make_cluster

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


def test_the_replay_is_a_recovery_hook() -> None:
    assert "kindler.db.replay.run_recovery_hook" in settings.KINDLER_RECOVERY_HOOKS
