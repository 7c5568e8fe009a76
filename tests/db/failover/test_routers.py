from __future__ import annotations

import pytest

from clusters.models import Cluster
from kindler.db.failover.pinning import pinned_alias
from kindler.db.failover.routers import FailoverRouter
from tests.conftest import BOTH

pytestmark = pytest.mark.django_db(databases=BOTH)


def test_reads_and_writes_go_to_postgres_while_primary() -> None:
    router = FailoverRouter()
    assert router.db_for_read(Cluster) == "postgres"
    assert router.db_for_write(Cluster) == "postgres"


def test_contrib_models_follow_the_active_alias() -> None:
    from django.contrib.auth.models import User

    with pinned_alias("sqlite"):
        assert FailoverRouter().db_for_write(User) == "sqlite"


def test_an_object_is_saved_back_where_it_was_loaded_from() -> None:
    Cluster.objects.using("postgres").create(name="dev")
    cluster = Cluster.objects.using("postgres").get(name="dev")
    with pinned_alias("sqlite"):
        assert FailoverRouter().db_for_write(Cluster, instance=cluster) == "postgres"


def test_migrations_are_allowed_on_both_aliases_only() -> None:
    router = FailoverRouter()
    assert [router.allow_migrate(db, "clusters") for db in ("postgres", "sqlite", "default")] == [
        True,
        True,
        False,
    ]
