"""The API's compiled reads return what the ORM would, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.forms.models import model_to_dict

from clusters import queries
from clusters.models import Cluster
from clusters.serializers import cluster_to_dict
from tests.conftest import BOTH
from tests.factories import make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH)


def as_saved(cluster: Cluster) -> dict[str, object]:
    fields = model_to_dict(cluster)
    return {**fields, "uid": cluster.uid, "version": cluster.version, "db": cluster._state.db}


def test_a_named_cluster_is_the_orms_to_the_last_field(alias: str) -> None:
    make_cluster(
        name="dev",
        subnet="10.101.0.0/16",
        server_ip="10.0.0.5",
        register_argocd=False,
        last_reconciled_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        reconcile_error="boom",
    )
    found = queries.cluster_named("dev")
    assert found is not None
    orm = Cluster.objects.get(name="dev")
    assert (as_saved(found), found.created_at, found._state.adding) == (
        as_saved(orm),
        orm.created_at,
        False,
    )


def test_a_missing_name_is_none(alias: str) -> None:
    make_cluster(name="dev")
    assert queries.cluster_named("uat") is None


def test_every_cluster_comes_in_the_models_order(alias: str) -> None:
    for name in ("uat", "dev", "prod"):
        make_cluster(name=name)
    assert [c.name for c in queries.clusters_page(10)] == ["dev", "prod", "uat"]


def test_the_hosts_with_clusters_come_once_each_in_order(alias: str) -> None:
    for name, host in (("dev", "b"), ("uat", "a"), ("prod", "a"), ("lab", "c")):
        make_cluster(name=name, host=host)
    # Unplaced: as an instance of 0.1.0 inserts it, with the column's database default.
    Cluster.objects.filter(name="lab").update(host="")
    assert queries.cluster_hosts() == ["", "a", "b"]


def test_no_clusters_no_hosts(alias: str) -> None:
    assert queries.cluster_hosts() == []


def test_a_page_starts_at_its_offset_and_holds_its_count(alias: str) -> None:
    for name in ("a", "b", "c", "d", "e"):
        make_cluster(name=name)
    assert [c.name for c in queries.clusters_page(2, offset=1)] == ["b", "c"]


def test_a_page_after_a_name_starts_past_it(alias: str) -> None:
    for name in ("a", "b", "c", "d", "e"):
        make_cluster(name=name)
    pages = [queries.clusters_page(2, after="b"), queries.clusters_page(2, offset=1, after="b")]
    assert [[c.name for c in page] for page in pages] == [["c", "d"], ["d", "e"]]


def test_the_listed_rows_serialize_as_the_models_do(alias: str) -> None:
    make_cluster(
        name="dev",
        subnet="10.101.0.0/16",
        register_portainer=False,
        last_reconciled_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        reconcile_error="boom",
    )
    make_cluster(name="uat", desired_state="stopped")
    listed = [cluster_to_dict(row) for row in queries.clusters_page(10)]
    assert listed == [cluster_to_dict(cluster) for cluster in Cluster.objects.all()]


def test_a_cluster_read_this_way_saves_in_place(alias: str) -> None:
    make_cluster(name="dev")
    found = queries.cluster_named("dev")
    assert found is not None
    found.reconcile_error = "noted"
    found.save()
    assert list(Cluster.objects.values_list("name", "reconcile_error", "version")) == [
        ("dev", "noted", 2)
    ]
