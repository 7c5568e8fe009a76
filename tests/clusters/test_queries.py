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
    assert [c.name for c in queries.all_clusters()] == ["dev", "prod", "uat"]


def test_the_listed_rows_serialize_as_the_models_do(alias: str) -> None:
    make_cluster(
        name="dev",
        subnet="10.101.0.0/16",
        register_portainer=False,
        last_reconciled_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        reconcile_error="boom",
    )
    make_cluster(name="uat", desired_state="stopped")
    listed = [cluster_to_dict(row) for row in queries.all_clusters()]
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
