from __future__ import annotations

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from clusters.models import Cluster
from kindler.db.models import JournalEntry
from kindler.db.sync.journal import journal_suppressed
from tests.conftest import BOTH
from tests.factories import make_cluster
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)


def sqlite_rows() -> list[tuple[str, int]]:
    return list(Cluster.objects.using("sqlite").values_list("name", "http_port"))


def test_a_row_saved_on_postgres_is_in_sqlite_at_once() -> None:
    cluster = make_cluster(using="postgres", name="dev", http_port=18090)
    assert sqlite_rows() == [("dev", 18090)]
    assert Cluster.objects.using("sqlite").get(name="dev").uid == cluster.uid


def test_a_change_saved_on_postgres_is_in_sqlite_at_once() -> None:
    cluster = make_cluster(using="postgres", name="dev", http_port=18090)
    cluster.http_port = 18095
    cluster.save()
    assert sqlite_rows() == [("dev", 18095)]


def test_a_row_deleted_on_postgres_leaves_sqlite_at_once() -> None:
    make_cluster(using="postgres", name="dev").delete()
    assert sqlite_rows() == []


def test_writes_in_a_transaction_reach_sqlite_when_it_commits() -> None:
    with transaction.atomic(using="postgres"):
        make_cluster(using="postgres", name="dev", http_port=18090)
        make_cluster(using="postgres", name="uat", http_port=18100)
        assert sqlite_rows() == []
    assert sorted(sqlite_rows()) == [("dev", 18090), ("uat", 18100)]


def test_a_rolled_back_transaction_copies_nothing_and_the_next_one_still_does() -> None:
    with transaction.atomic(using="postgres"):
        make_cluster(using="postgres", name="ghost")
        transaction.set_rollback(True, using="postgres")
    with transaction.atomic(using="postgres"):
        make_cluster(using="postgres", name="dev", http_port=18090)
    assert sqlite_rows() == [("dev", 18090)]


@pytest.mark.urls("tests.urls")
def test_a_write_made_in_a_request_is_in_sqlite_when_it_is_answered() -> None:
    from django.test import Client

    response = Client().post("/probe/create", {"name": "dev"})
    assert (response.status_code, [name for name, _ in sqlite_rows()]) == (201, ["dev"])


def test_a_partial_save_copies_only_its_fields() -> None:
    cluster = make_cluster(using="postgres", name="dev", http_port=18090)
    with journal_suppressed():
        Cluster.objects.using("sqlite").filter(uid=cluster.uid).update(reconcile_error="local note")
    cluster.desired_state = "absent"
    cluster.save(update_fields=["desired_state"])
    copy = Cluster.objects.using("sqlite").get(uid=cluster.uid)
    assert (copy.desired_state, copy.reconcile_error, copy.version) == (
        "absent",
        "local note",
        cluster.version,
    )


def test_changes_not_saved_before_the_commit_are_not_copied() -> None:
    with transaction.atomic(using="postgres"):
        cluster = make_cluster(using="postgres", name="dev", http_port=18090)
        cluster.http_port = 18099
    assert sqlite_rows() == [("dev", 18090)]


def test_the_copy_survives_postgres_dying_right_after_the_commit(pg: PostgresServer) -> None:
    with transaction.atomic(using="postgres"):
        # Registered first, so it runs before the copy does.
        transaction.on_commit(pg.kill, using="postgres")
        make_cluster(using="postgres", name="dev", http_port=18090)
    assert sqlite_rows() == [("dev", 18090)]


def test_a_queryset_update_on_postgres_is_in_sqlite_when_it_commits() -> None:
    make_cluster(using="postgres", name="dev", actual_state="unknown")
    with transaction.atomic(using="postgres"):
        # Picked by the field the update changes: the copy must still find it.
        Cluster.objects.using("postgres").filter(actual_state="unknown").update(
            actual_state="running"
        )
    local = Cluster.objects.using("sqlite").get(name="dev")
    remote = Cluster.objects.using("postgres").get(name="dev")
    assert (local.actual_state, local.version) == ("running", remote.version)


def test_a_queryset_update_copies_what_committed_even_if_postgres_dies_after(
    pg: PostgresServer,
) -> None:
    make_cluster(using="postgres", name="dev", actual_state="unknown")
    with transaction.atomic(using="postgres"):
        Cluster.objects.using("postgres").filter(name="dev").update(actual_state="stopped")
        transaction.on_commit(pg.kill, using="postgres")
    assert Cluster.objects.using("sqlite").get(name="dev").actual_state == "stopped"


def sqlite_synchronous() -> int:
    with connections["sqlite"].cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        return int(cursor.fetchone()[0])


def test_the_copy_leaves_sqlite_committing_with_a_full_sync() -> None:
    make_cluster(using="postgres", name="dev", http_port=18090)
    assert (sqlite_rows(), sqlite_synchronous()) == ([("dev", 18090)], 2)


def test_a_full_save_overwrites_a_stale_copy_in_one_statement() -> None:
    cluster = make_cluster(using="postgres", name="dev", http_port=18090)
    with journal_suppressed():
        Cluster.objects.using("sqlite").filter(uid=cluster.uid).update(http_port=18077)
    cluster.http_port = 18095
    with CaptureQueriesContext(connections["sqlite"]) as queries:
        cluster.save()
    # Read once, for the columns the save changed (kindler.db.sync.acknowledged).
    writes = [q["sql"].split()[0] for q in queries if "clusters_cluster" in q["sql"]]
    assert (sqlite_rows(), writes) == ([("dev", 18095)], ["SELECT", "INSERT"])


def test_a_row_with_journal_entries_keeps_its_local_change() -> None:
    cluster = make_cluster(using="postgres", name="dev", http_port=18090)
    JournalEntry.objects.using("sqlite").create(
        model="clusters.cluster", uid=str(cluster.uid), op="update", created_at="now"
    )
    cluster.http_port = 18095
    cluster.save()
    assert sqlite_rows() == [("dev", 18090)]
