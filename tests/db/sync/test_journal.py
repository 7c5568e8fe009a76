from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction

from clusters.models import Cluster, OperationLog
from kindler.db.failover.pinning import pinned_alias
from kindler.db.models import JournalEntry
from kindler.db.sync.accounts import REFUSED, AccountsReadOnly
from kindler.db.sync.journal import instance_id, journal_suppressed
from tests.conftest import BOTH
from tests.factories import make_cluster, make_operation

pytestmark = pytest.mark.django_db(databases=BOTH)


def entries() -> list[tuple[str, str, int | None]]:
    return [
        (e.op, e.model, e.base_version) for e in JournalEntry.objects.using("sqlite").order_by("id")
    ]


@pytest.fixture
def on_sqlite() -> object:
    with pinned_alias("sqlite"):
        yield


def test_an_insert_is_journaled_with_its_row(on_sqlite: None) -> None:
    cluster = make_cluster(name="dev")
    entry = JournalEntry.objects.using("sqlite").get()
    assert (entry.op, entry.model, entry.uid, entry.base_version, entry.before) == (
        "insert",
        "clusters.cluster",
        cluster.uid.hex,
        None,
        None,
    )
    assert json.loads(entry.data or "")["name"] == "dev"


def test_a_save_is_journaled_with_the_version_it_was_made_on(on_sqlite: None) -> None:
    cluster = make_cluster()
    cluster.desired_state = "stopped"
    cluster.save()
    entry = JournalEntry.objects.using("sqlite").last()
    assert entry is not None
    assert (entry.op, entry.base_version) == ("update", 1)
    assert json.loads(entry.before or "")["desired_state"] == "present"
    assert json.loads(entry.data or "")["desired_state"] == "stopped"


def test_queryset_update_journals_every_row(on_sqlite: None) -> None:
    make_cluster()
    make_cluster()
    Cluster.objects.update(desired_state="stopped")
    assert entries()[2:] == [
        ("update", "clusters.cluster", 1),
        ("update", "clusters.cluster", 1),
    ]


def test_model_delete_is_journaled(on_sqlite: None) -> None:
    cluster = make_cluster()
    cluster.delete()
    assert entries() == [
        ("insert", "clusters.cluster", None),
        ("delete", "clusters.cluster", 1),
    ]


def test_bulk_delete_journals_every_row(on_sqlite: None) -> None:
    make_cluster()
    make_cluster()
    Cluster.objects.all().delete()
    assert [op for op, _, _ in entries()] == ["insert", "insert", "delete", "delete"]


def test_bulk_create_is_journaled(on_sqlite: None) -> None:
    OperationLog.objects.bulk_create(
        [OperationLog(cluster_name="a", operation="create"), OperationLog(cluster_name="b")]
    )
    assert entries() == [
        ("insert", "clusters.operationlog", None),
        ("insert", "clusters.operationlog", None),
    ]


def test_operation_log_changes_are_journaled(on_sqlite: None) -> None:
    operation = make_operation(make_cluster())
    operation.status = "running"
    operation.save()
    assert entries()[-1] == ("update", "clusters.operationlog", 1)


def test_a_rolled_back_change_leaves_no_entry(on_sqlite: None) -> None:
    def create_then_fail() -> None:
        with transaction.atomic(using="sqlite"):
            make_cluster()
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        create_then_fail()
    assert entries() == []


def test_writes_on_postgres_are_not_journaled() -> None:
    make_cluster(using="postgres")
    assert entries() == []


def test_the_mirror_writes_without_journaling(on_sqlite: None) -> None:
    with journal_suppressed():
        make_cluster()
    assert entries() == []


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_nothing_is_journaled_without_postgres(settings: object, on_sqlite: None) -> None:
    databases = dict(settings.DATABASES)  # type: ignore[attr-defined]
    del databases["postgres"]
    settings.DATABASES = databases  # type: ignore[attr-defined]
    make_cluster()
    assert entries() == []


def test_the_instance_id_is_stored_once_in_the_sqlite_file() -> None:
    from kindler.db.models import InstanceIdentity

    first = instance_id()
    assert instance_id() == first
    assert list(InstanceIdentity.objects.using("sqlite").values_list("instance_id", flat=True)) == [
        first
    ]


def test_account_changes_are_refused_during_an_outage(on_sqlite: None) -> None:
    with journal_suppressed():
        User.objects.create(username="ada")
    user = User.objects.get(username="ada")
    user.first_name = "Ada"
    with pytest.raises(AccountsReadOnly, match=r"^Accounts cannot be changed while PostgreSQL"):
        user.save()
    assert str(AccountsReadOnly(REFUSED)) == REFUSED


def test_a_login_stamp_is_allowed_during_an_outage(on_sqlite: None) -> None:
    from django.utils import timezone

    with journal_suppressed():
        User.objects.create(username="ada")
    user = User.objects.get(username="ada")
    user.last_login = timezone.now()
    user.save(update_fields=["last_login"])
    assert User.objects.get(username="ada").last_login == user.last_login


def test_group_membership_changes_are_refused_during_an_outage(on_sqlite: None) -> None:
    with journal_suppressed():
        user = User.objects.create(username="ada")
        group = Group.objects.create(name="ops")
    with pytest.raises(AccountsReadOnly):
        user.groups.add(group)
