from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User

from clusters.models import Cluster
from kindler.db.failover.pinning import pinned_alias
from kindler.db.models import RestoredRow
from kindler.db.sync import runs, writethrough
from kindler.db.sync.journal import journal_suppressed
from kindler.db.sync.mirror import lag_seconds, mirror
from tests.conftest import BOTH, wait_for
from tests.db.sync.syncing import (
    local_change,
    on_postgres,
    on_sqlite,
    remote_change,
    shared_cluster,
)
from tests.factories import make_cluster, make_operation

pytestmark = pytest.mark.django_db(databases=BOTH)


def sqlite_names() -> list[str]:
    return list(Cluster.objects.using("sqlite").values_list("name", flat=True))


def test_a_new_row_reaches_sqlite_with_its_uid_and_version() -> None:
    cluster = make_cluster(using="postgres", name="dev")
    mirror()
    copy = on_sqlite("dev")
    assert (copy.uid, copy.version) == (cluster.uid, cluster.version)


def test_operation_logs_are_mirrored() -> None:
    operation = make_operation(make_cluster(using="postgres"), using="postgres")
    mirror()
    from clusters.models import OperationLog

    assert OperationLog.objects.using("sqlite").get(uid=operation.uid).operation == "create"


def test_a_change_reaches_sqlite_on_the_next_run() -> None:
    shared_cluster(name="dev")
    remote_change("dev", http_port=28080)
    report = mirror()
    assert (report.full, report.pulled, on_sqlite("dev").http_port) == (False, 1, 28080)


def test_a_delete_reaches_sqlite_on_the_next_run() -> None:
    shared_cluster(name="dev")
    Cluster.objects.using("postgres").filter(name="dev").delete()
    report = mirror()
    assert (report.deleted, sqlite_names()) == (1, [])


def test_a_row_with_journaled_changes_is_never_overwritten() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    remote_change("dev", http_port=28080)
    report = mirror(full=True)
    assert report.skipped == 1
    assert (on_sqlite("dev").desired_state, on_sqlite("dev").http_port) == (
        "stopped",
        cluster.http_port,
    )


def test_a_row_with_journaled_changes_is_not_deleted() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    Cluster.objects.using("postgres").filter(name="dev").delete()
    mirror()
    assert sqlite_names() == ["dev"]


def test_a_full_run_writes_back_a_row_postgres_lacks_without_a_tombstone() -> None:
    shared_cluster(name="dev")
    with pinned_alias("sqlite"), journal_suppressed():
        kept = make_cluster(name="kept")
    report = mirror(full=True)
    assert (sqlite_names(), on_postgres("kept").uid) == (["dev", "kept"], kept.uid)
    assert [(label, name, why) for label, _, name, why in report.restored] == [
        ("clusters.cluster", "kept", "restored")
    ]
    assert list(RestoredRow.objects.using("postgres").values_list("name", "why")) == [
        ("kept", "restored")
    ]


def test_a_full_run_removes_a_row_postgres_deleted() -> None:
    shared_cluster(name="dev")
    with writethrough.suppressed():
        Cluster.objects.using("postgres").filter(name="dev").delete()
    report = mirror(full=True)
    assert (sqlite_names(), report.deleted, report.restored) == ([], 1, [])


def test_an_unchanged_database_pulls_nothing() -> None:
    shared_cluster(name="dev")
    report = mirror()
    assert (report.full, report.pulled, report.deleted) == (False, 0, 0)


def test_users_are_mirrored_with_their_ids_and_password_hashes() -> None:
    user = User.objects.db_manager("postgres").create_user("ada", password="s3cret-pass")
    mirror()
    copy = User.objects.using("sqlite").get(username="ada")
    assert (copy.pk, copy.password) == (user.pk, user.password)


def test_groups_memberships_and_permissions_are_mirrored() -> None:
    user = User.objects.db_manager("postgres").create_user("ada")
    group = Group.objects.using("postgres").create(name="ops")
    permission = Permission.objects.using("postgres").get(codename="change_cluster")
    group.permissions.add(permission)
    user.groups.add(group)
    mirror()
    copy = User.objects.using("sqlite").get(username="ada")
    assert list(copy.groups.values_list("name", flat=True)) == ["ops"]
    assert list(
        Group.objects.using("sqlite").get(name="ops").permissions.values_list("codename", flat=True)
    ) == ["change_cluster"]


def test_a_user_deleted_in_postgres_is_deleted_here() -> None:
    User.objects.db_manager("postgres").create_user("ada")
    mirror()
    User.objects.using("postgres").filter(username="ada").delete()
    mirror()
    assert not User.objects.using("sqlite").filter(username="ada").exists()


def test_accounts_are_written_only_when_they_changed() -> None:
    ada = User.objects.db_manager("postgres").create_user("ada", password="pw-ada-1")
    group = Group.objects.using("postgres").create(name="operators")
    ada.groups.add(group)
    assert mirror(full=True).accounts == 3
    assert mirror(full=True).accounts == 0
    ada.first_name = "Ada"
    ada.save(using="postgres")
    assert mirror(full=True).accounts == 1


def test_the_run_and_its_lag_are_recorded() -> None:
    mirror()
    last = runs.last(runs.MIRROR)
    assert last is not None
    assert (last.ok, last.result) == (True, "pulled 0, deleted 0, skipped 0, accounts 0")
    lag = lag_seconds()
    assert lag is not None
    assert lag >= 0


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_background_mirror_brings_a_change_and_a_delete(settings: object) -> None:
    settings.KINDLER_MIRROR_INTERVAL = 0.2  # type: ignore[attr-defined]
    make_cluster(using="postgres", name="dev")
    assert wait_for(lambda: sqlite_names() == ["dev"])
    remote_change("dev", http_port=28080)
    assert wait_for(lambda: on_sqlite("dev").http_port == 28080)
    Cluster.objects.using("postgres").filter(name="dev").delete()
    assert wait_for(lambda: sqlite_names() == [])
