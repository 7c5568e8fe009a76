"""Replay merges field by field, sees writers other than Kindler, and never doubles a port."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connections

from clusters.models import Cluster
from kindler.db.failover.pinning import pinned_alias
from kindler.db.sync.replay import replay
from tests.conftest import BOTH
from tests.db.sync.syncing import (
    conflicts,
    local_change,
    on_postgres,
    remote_change,
    shared_cluster,
)
from tests.factories import cluster_fields, make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH)


def psql(sql: str, *params: Any) -> None:
    """Write to PostgreSQL as psql would: raw SQL, no Kindler code on the way."""
    with connections["postgres"].cursor() as cursor:
        cursor.execute(sql, params)


def test_a_raw_update_bumps_the_version() -> None:
    make_cluster(using="postgres", name="dev")
    psql("UPDATE clusters_cluster SET reconcile_error = 'x' WHERE name = 'dev'")
    assert on_postgres("dev").version == 2


def test_a_raw_insert_gets_a_uid_and_a_version() -> None:
    psql(
        "INSERT INTO clusters_cluster (name, provider, host, node_port, pf_port, http_port, "
        "https_port, subnet, register_portainer, haproxy_route, register_argocd, "
        "desired_state, actual_state, reconcile_error, created_at, updated_at) VALUES "
        "('raw', 'k3d', 'docker-1', 30080, 29000, 29080, 29443, '', true, true, true, "
        "'present', 'unknown', '', now(), now())"
    )
    row = on_postgres("raw")
    assert (row.uid is not None, row.version) == (True, 1)


def test_a_raw_edit_of_another_field_merges_with_the_local_change() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    psql("UPDATE clusters_cluster SET http_port = 28080 WHERE name = 'dev'")
    report = replay()
    row = on_postgres("dev")
    assert (report.merged, report.conflicts, conflicts()) == (1, 0, [])
    assert (row.desired_state, row.http_port, row.version) == ("stopped", 28080, 3)


def test_sqlite_shows_the_merged_row() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    psql("UPDATE clusters_cluster SET http_port = 28080 WHERE name = 'dev'")
    replay()
    copy = Cluster.objects.using("sqlite").get(name="dev")
    assert (copy.desired_state, copy.http_port, copy.version) == ("stopped", 28080, 3)


def test_a_raw_edit_of_the_same_field_is_a_conflict() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    psql("UPDATE clusters_cluster SET desired_state = 'absent' WHERE name = 'dev'")
    report = replay()
    assert (report.conflicts, conflicts()) == (1, [("update/update", "dev")])
    assert on_postgres("dev").desired_state == "absent"


def test_both_sides_setting_the_same_value_is_no_conflict() -> None:
    cluster = shared_cluster(name="dev")
    local_change(cluster, desired_state="stopped")
    psql("UPDATE clusters_cluster SET desired_state = 'stopped' WHERE name = 'dev'")
    assert (replay().conflicts, on_postgres("dev").desired_state) == (0, "stopped")


def test_an_insert_on_a_port_another_cluster_holds_is_a_conflict() -> None:
    with pinned_alias("sqlite"):
        make_cluster(name="mine", http_port=45080, https_port=45443, pf_port=45000)
    make_cluster(using="postgres", name="theirs", http_port=46080, https_port=45080, pf_port=46000)
    report = replay()
    holders = Cluster.objects.using("postgres").filter(https_port=45080) | Cluster.objects.using(
        "postgres"
    ).filter(http_port=45080)
    assert (report.conflicts, conflicts()) == (1, [("insert/insert", "mine")])
    assert list(holders.values_list("name", flat=True)) == ["theirs"]


def test_an_update_onto_a_port_another_cluster_holds_is_a_conflict() -> None:
    cluster = shared_cluster(name="mine", http_port=45080, https_port=45443, pf_port=45000)
    make_cluster(using="postgres", name="theirs", http_port=47080, https_port=47443, pf_port=47000)
    local_change(cluster, pf_port=47080)
    report = replay()
    assert (report.conflicts, conflicts()) == (1, [("update/update", "mine")])
    assert on_postgres("mine").pf_port == 45000


def test_a_port_clash_keeps_the_rest_of_the_batch() -> None:
    with pinned_alias("sqlite"):
        make_cluster(name="mine", http_port=45080, https_port=45443, pf_port=45000)
        make_cluster(name="fine", http_port=48080, https_port=48443, pf_port=48000)
    make_cluster(using="postgres", name="theirs", http_port=45080, https_port=46443, pf_port=46000)
    report = replay()
    assert (report.pushed, report.conflicts) == (1, 1)
    assert on_postgres("fine").http_port == 48080


def test_an_insert_on_a_port_a_cluster_on_another_host_holds_is_applied() -> None:
    with pinned_alias("sqlite"):
        make_cluster(name="mine", host="docker-1", http_port=45080, https_port=45443, pf_port=45000)
    make_cluster(
        using="postgres", name="theirs", host="docker-2", http_port=46080, https_port=45080,
        pf_port=46000,
    )  # fmt: skip
    report = replay()
    assert (report.pushed, report.conflicts, conflicts()) == (1, 0, [])
    assert (on_postgres("mine").host, on_postgres("mine").http_port) == ("docker-1", 45080)


def test_an_update_moving_onto_a_port_held_on_another_host_is_applied() -> None:
    cluster = shared_cluster(
        name="mine", host="docker-1", http_port=45080, https_port=45443, pf_port=45000
    )
    make_cluster(
        using="postgres", name="theirs", host="docker-2", http_port=47080, https_port=47443,
        pf_port=47000,
    )  # fmt: skip
    local_change(cluster, pf_port=47080)
    report = replay()
    assert (report.conflicts, on_postgres("mine").pf_port) == (0, 47080)


def test_a_port_freed_earlier_in_the_batch_is_taken_later_in_it() -> None:
    cluster = shared_cluster(name="mine", http_port=45080, https_port=45443, pf_port=45000)
    local_change(cluster, pf_port=45001)
    with pinned_alias("sqlite"):
        make_cluster(name="next", http_port=46080, https_port=46443, pf_port=45000)
    report = replay()
    assert (report.pushed, report.conflicts, conflicts()) == (2, 0, [])
    assert (on_postgres("mine").pf_port, on_postgres("next").pf_port) == (45001, 45000)


def test_a_port_kept_by_a_conflicted_change_makes_a_later_taker_a_conflict() -> None:
    cluster = shared_cluster(name="mine", http_port=45080, https_port=45443, pf_port=45000)
    local_change(cluster, pf_port=45001, desired_state="stopped")
    remote_change("mine", desired_state="absent")
    with pinned_alias("sqlite"):
        make_cluster(name="next", http_port=46080, https_port=46443, pf_port=45000)
    report = replay()
    assert conflicts() == [("update/update", "mine"), ("insert/insert", "next")]
    assert (report.pushed, on_postgres("mine").pf_port) == (0, 45000)


def test_a_name_with_quotes_and_backslashes_finds_the_row_that_holds_it() -> None:
    # Not a name Kindler's forms take; psql or an older release could write one.
    name = 'a"b\\c,{d} e'
    with pinned_alias("sqlite"):
        Cluster(**cluster_fields(name=name, http_port=45080, https_port=45443)).save()
    Cluster(**cluster_fields(name=name, http_port=46080, https_port=46443)).save(using="postgres")
    report = replay()
    assert (report.conflicts, conflicts()) == (1, [("insert/insert", name)])
