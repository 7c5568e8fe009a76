"""No two clusters hold one host port, whoever writes and however many at once."""

from __future__ import annotations

import contextvars
import json
import threading
from typing import Any

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management.sql import emit_post_migrate_signal, emit_pre_migrate_signal
from django.db import IntegrityError, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from clusters import lifecycle, portclaims, preflight
from clusters.models import Cluster, OperationLog, PortClaim, free_host_ports
from tests.conftest import BOTH
from tests.factories import cluster_fields, make_cluster, make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)

RACERS = 12


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


def insert_raw(alias: str, before_placement: bool = False, **overrides: Any) -> None:
    """Insert a cluster with plain SQL, as psql or a replay would: no model validation."""
    cluster = Cluster(**cluster_fields(**overrides))
    cluster.created_at = cluster.updated_at = timezone.now()
    db = connections[alias]
    fields = [field for field in Cluster._meta.concrete_fields if not field.primary_key]
    if before_placement:
        # The table as an earlier migration left it: without host, and
        # without every column added after it.
        with db.cursor() as cursor:
            present = {
                column.name
                for column in db.introspection.get_table_description(cursor, "clusters_cluster")
            }
        fields = [field for field in fields if field.column in present]
        assert "host" not in present
    columns = ", ".join(db.ops.quote_name(str(field.column)) for field in fields)
    values = [field.get_db_prep_save(getattr(cluster, field.attname), db) for field in fields]
    marks = ", ".join(["%s"] * len(fields))
    with transaction.atomic(using=alias), db.cursor() as cursor:
        cursor.execute(f"INSERT INTO clusters_cluster ({columns}) VALUES ({marks})", values)


def update_raw(alias: str, name: str, **ports: int) -> None:
    """Change a cluster's ports with plain SQL."""
    assignments = ", ".join(f"{column} = %s" for column in ports)
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute(
            f"UPDATE clusters_cluster SET {assignments} WHERE name = %s", [*ports.values(), name]
        )


def claims(alias: str) -> list[tuple[int, str, str]]:
    """Return every claim as (port, cluster name, field), by port."""
    names = dict(Cluster.objects.using(alias).values_list("uid", "name"))
    rows = PortClaim.objects.using(alias).values_list("port", "cluster_uid", "field")
    return [(port, names[uid], field) for port, uid, field in rows]


@pytest.mark.parametrize("field", ["http_port", "https_port", "pf_port"])
def test_a_raw_insert_of_a_port_another_cluster_holds_is_refused(alias: str, field: str) -> None:
    make_cluster(name="porta", http_port=17021)
    with pytest.raises(IntegrityError):
        insert_raw(alias, False, name="portb", **{field: 17021})
    assert list(Cluster.objects.values_list("name", flat=True)) == ["porta"]


def test_a_raw_update_onto_a_port_another_cluster_holds_is_refused(alias: str) -> None:
    make_cluster(name="porta", http_port=17021)
    make_cluster(name="portb", http_port=17022, https_port=17023, pf_port=17024)
    with pytest.raises(IntegrityError):
        update_raw(alias, "portb", pf_port=17021)
    assert Cluster.objects.get(name="portb").pf_port == 17024


def test_a_raw_insert_using_one_port_twice_is_refused(alias: str) -> None:
    with pytest.raises(IntegrityError):
        insert_raw(alias, name="porta", http_port=17021, https_port=17021)
    assert Cluster.objects.count() == 0


def test_node_port_may_repeat_in_the_database(alias: str) -> None:
    make_cluster(name="porta", node_port=30080)
    insert_raw(alias, name="portb", node_port=30080)
    assert Cluster.objects.filter(node_port=30080).count() == 2


def test_a_new_cluster_claims_its_host_ports(alias: str) -> None:
    make_cluster(name="porta", http_port=17021, https_port=17022, pf_port=17023)
    assert claims(alias) == [
        (17021, "porta", "http_port"),
        (17022, "porta", "https_port"),
        (17023, "porta", "pf_port"),
    ]


def test_changing_a_port_frees_the_old_one_and_claims_the_new_one(alias: str) -> None:
    porta = make_cluster(name="porta", http_port=17021, https_port=17022, pf_port=17023)
    porta.http_port = 17024
    porta.save()
    make_cluster(name="portb", http_port=17021, https_port=17025, pf_port=17026)
    assert claims(alias) == [
        (17021, "portb", "http_port"),
        (17022, "porta", "https_port"),
        (17023, "porta", "pf_port"),
        (17024, "porta", "http_port"),
        (17025, "portb", "https_port"),
        (17026, "portb", "pf_port"),
    ]


def test_a_cluster_can_swap_its_own_ports(alias: str) -> None:
    make_cluster(name="porta", http_port=17021, https_port=17022, pf_port=17023)
    update_raw(alias, "porta", http_port=17022, https_port=17021)
    assert claims(alias) == [
        (17021, "porta", "https_port"),
        (17022, "porta", "http_port"),
        (17023, "porta", "pf_port"),
    ]


def test_a_save_that_changes_no_port_keeps_the_claims(alias: str) -> None:
    porta = make_cluster(name="porta")
    before = list(PortClaim.objects.values_list("pk", flat=True))
    porta.actual_state = "running"
    porta.save()
    assert list(PortClaim.objects.values_list("pk", flat=True)) == before


def test_deleting_a_cluster_frees_its_ports(alias: str) -> None:
    make_cluster(name="porta", http_port=17021, https_port=17022, pf_port=17023).delete()
    assert claims(alias) == []
    make_cluster(name="portb", http_port=17023, https_port=17021, pf_port=17022)


def test_deleting_clusters_in_bulk_frees_their_ports(alias: str) -> None:
    make_cluster(name="porta")
    make_cluster(name="portb")
    Cluster.objects.all().delete()
    assert claims(alias) == []


def race(attempts: list[dict[str, Any]]) -> list[Cluster | Exception | None]:
    """Call request_create with each attempt's fields in its own thread, all at once."""
    barrier = threading.Barrier(len(attempts))
    outcomes: list[Cluster | Exception | None] = [None] * len(attempts)

    def attempt(index: int) -> None:
        try:
            barrier.wait()
            outcomes[index] = lifecycle.request_create(**attempts[index])[0]
        except Exception as exc:
            outcomes[index] = exc
        finally:
            # Each thread has connections of its own; the database flush needs them gone.
            connections.close_all()

    # A copy of the context each: the alias the test pinned is a context variable.
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(attempt, index))
        for index in range(len(attempts))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_concurrent_creates_of_one_port_let_exactly_one_through(alias: str) -> None:
    attempts = [cluster_fields(name=f"race-{i}", http_port=17021) for i in range(RACERS)]
    outcomes = race(attempts)
    [winner] = [outcome for outcome in outcomes if isinstance(outcome, Cluster)]
    # Anything but a refusal shows as itself, so a 500-to-be fails readably.
    refusals = [
        outcome.message_dict if isinstance(outcome, ValidationError) else repr(outcome)
        for outcome in outcomes
        if not isinstance(outcome, Cluster)
    ]
    message = f"Port 17021 is already used by cluster {winner.name}."
    assert refusals == [{"http_port": [message]}] * (RACERS - 1)
    assert list(Cluster.objects.values_list("name", flat=True)) == [winner.name]
    assert list(OperationLog.objects.values_list("cluster_name", flat=True)) == [winner.name]


def test_a_create_that_loses_a_port_after_validation_names_the_holder(
    alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_check = preflight.check_request

    def someone_else_takes_the_port(cluster: Cluster) -> None:
        real_check(cluster)
        insert_raw(alias, name="portb", pf_port=17021)

    monkeypatch.setattr(preflight, "check_request", someone_else_takes_the_port)
    with pytest.raises(ValidationError) as caught:
        lifecycle.request_create(**cluster_fields(name="porta", http_port=17021))
    assert caught.value.message_dict == {
        "http_port": ["Port 17021 is already used by cluster portb."]
    }
    assert (Cluster.objects.get().name, OperationLog.objects.count()) == ("portb", 0)


def test_a_create_that_loses_name_and_port_reports_the_name(
    alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_check = preflight.check_request

    def the_same_request_lands_first(cluster: Cluster) -> None:
        real_check(cluster)
        insert_raw(alias, name="porta", http_port=17021)

    monkeypatch.setattr(preflight, "check_request", the_same_request_lands_first)
    with pytest.raises(ValidationError) as caught:
        lifecycle.request_create(**cluster_fields(name="porta", http_port=17021))
    assert caught.value.message_dict == {"name": ["A cluster named porta already exists."]}


def test_an_update_that_loses_a_port_after_validation_names_the_holder(alias: str) -> None:
    porta = make_cluster(name="porta", https_port=17022)
    porta.https_port = 17021
    porta.full_clean()
    insert_raw(alias, name="portb", http_port=17021)
    with pytest.raises(ValidationError) as caught:
        lifecycle.request_update(porta)
    assert caught.value.message_dict == {
        "https_port": ["Port 17021 is already used by cluster portb."]
    }
    assert Cluster.objects.get(name="porta").https_port == 17022


def patch_json(client: Client, url: str, body: Any) -> Any:
    return client.patch(url, json.dumps(body), content_type="application/json")


def holder_arrives_before_the_save(alias: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next request_update find port 17021 taken by portb once validated."""
    real_update = lifecycle.request_update

    def update(cluster: Cluster) -> None:
        insert_raw(alias, name="portb", http_port=17021)
        real_update(cluster)

    monkeypatch.setattr(lifecycle, "request_update", update)


def test_a_patch_that_loses_a_port_is_422_naming_the_holder(
    alias: str, admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_cluster(name="porta")
    holder_arrives_before_the_save(alias, monkeypatch)
    response = patch_json(admin_client, "/api/clusters/porta", {"http_port": 17021})
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "http_port"],
                    "msg": "Port 17021 is already used by cluster portb.",
                }
            ]
        },
    )


def test_a_create_post_that_loses_a_port_is_422_naming_the_holder(
    alias: str, admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_check = preflight.check_request

    def someone_else_takes_the_port(cluster: Cluster) -> None:
        real_check(cluster)
        insert_raw(alias, name="portb", https_port=17021)

    monkeypatch.setattr(preflight, "check_request", someone_else_takes_the_port)
    body = {"name": "porta", "http_port": 17021}
    response = admin_client.post("/api/clusters", json.dumps(body), content_type="application/json")
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "http_port"],
                    "msg": "Port 17021 is already used by cluster portb.",
                }
            ]
        },
    )


def test_the_edit_form_that_loses_a_port_shows_the_holder(
    alias: str, admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_cluster(name="porta")
    holder_arrives_before_the_save(alias, monkeypatch)
    data = {
        key: value
        for key, value in cluster_fields(http_port=17021, node_port=30080).items()
        if key != "name"
    }
    response = admin_client.post("/clusters/porta/edit/", data)
    assert response.status_code == 422
    assert response.context["form"].errors == {
        "http_port": ["Port 17021 is already used by cluster portb."]
    }


def migrate(db: Any, targets: list[tuple[str, str]]) -> None:
    """Migrate db to targets with the signals the migrate command sends around it."""
    emit_pre_migrate_signal(0, False, db.alias)
    MigrationExecutor(db).migrate(targets)
    emit_post_migrate_signal(0, False, db.alias)


def latest(db: Any) -> list[tuple[str, str]]:
    """Return the last migration of every app: where the test databases are."""
    return list(MigrationExecutor(db).loader.graph.leaf_nodes())


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_migration_claims_existing_ports_and_skips_duplicates(
    alias: str, settings: Any, no_probes: None
) -> None:
    settings.KINDLER_DEFAULT_HOST = "docker-old"
    db = connections[alias]
    after = latest(db)
    # Backward past 0006, which drops a column SQLite's journal triggers read,
    # then forward: the signals migrate sends take the triggers off and back on.
    migrate(db, [("clusters", "0004_roles")])
    try:
        ports = {"http_port": 17021, "https_port": 17022, "pf_port": 17023}
        insert_raw(alias, before_placement=True, name="porta", **ports)
        ports = {"http_port": 17024, "https_port": 17021, "pf_port": 17025}
        insert_raw(alias, before_placement=True, name="portb", **ports)
    finally:
        migrate(db, after)
    assert set(Cluster.objects.values_list("host", flat=True)) == {"docker-old"}
    assert set(PortClaim.objects.values_list("host", flat=True)) == {"docker-old"}
    assert claims(alias) == [
        (17021, "porta", "http_port"),
        (17022, "porta", "https_port"),
        (17023, "porta", "pf_port"),
        (17024, "portb", "http_port"),
        (17025, "portb", "pf_port"),
    ]


def test_clusters_on_different_hosts_may_use_the_same_ports(alias: str) -> None:
    ports: dict[str, Any] = {"http_port": 17021, "https_port": 17022, "pf_port": 17023}
    make_cluster(name="porta", host="docker-1", **ports)
    make_cluster(name="portb", host="docker-2", **ports)
    insert_raw(alias, name="portc", host="docker-3", **ports)
    rows = PortClaim.objects.filter(port=17021).values_list("host", flat=True)
    assert sorted(rows) == ["docker-1", "docker-2", "docker-3"]


def test_a_raw_insert_of_a_port_held_on_the_same_host_is_refused(alias: str) -> None:
    make_cluster(name="porta", host="docker-1", http_port=17021)
    make_cluster(name="portb", host="docker-2", http_port=17021)
    with pytest.raises(IntegrityError):
        insert_raw(alias, name="portc", host="docker-2", https_port=17021)


def test_validation_names_only_a_holder_on_the_same_host(alias: str) -> None:
    make_cluster(name="porta", host="docker-1", http_port=17021)
    cluster = Cluster(**cluster_fields(name="portb", host="docker-2", http_port=17021))
    cluster.full_clean()
    clash = Cluster(**cluster_fields(name="portc", host="docker-1", http_port=17021))
    with pytest.raises(ValidationError) as caught:
        clash.full_clean()
    assert caught.value.message_dict == {
        "http_port": ["Port 17021 is already used by cluster porta."]
    }


def test_moving_a_cluster_to_another_host_moves_its_claims(alias: str) -> None:
    make_cluster(name="porta", host="docker-1", http_port=17021)
    Cluster.objects.filter(name="porta").update(host="docker-2")
    hosts = set(PortClaim.objects.values_list("host", flat=True))
    assert hosts == {"docker-2"}
    make_cluster(name="portb", host="docker-1", http_port=17021)


def test_subnets_overlap_only_on_one_host(alias: str) -> None:
    make_cluster(name="porta", host="docker-1", subnet="10.101.0.0/16")
    other_host = Cluster(**cluster_fields(name="portb", host="docker-2", subnet="10.101.0.0/16"))
    assert other_host.overlapping_subnet() is None
    same_host = Cluster(**cluster_fields(name="portc", host="docker-1", subnet="10.101.0.0/17"))
    assert str(same_host.overlapping_subnet()) == "porta"


def test_free_ports_are_counted_per_host(alias: str) -> None:
    make_cluster(name="porta", host="docker-1", http_port=18080, https_port=18443, pf_port=19000)
    assert free_host_ports("docker-1") == {
        "http_port": 18081,
        "https_port": 18444,
        "pf_port": 19001,
    }
    assert free_host_ports("docker-2") == {
        "http_port": 18080,
        "https_port": 18443,
        "pf_port": 19000,
    }


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_without_a_default_host_the_migration_leaves_clusters_unplaced(
    alias: str, settings: Any, no_probes: None
) -> None:
    settings.KINDLER_DEFAULT_HOST = ""
    db = connections[alias]
    after = latest(db)
    migrate(db, [("clusters", "0004_roles")])
    try:
        insert_raw(alias, before_placement=True, name="porta")
    finally:
        migrate(db, after)
    assert list(Cluster.objects.values_list("name", "host")) == [("porta", "")]
    assert set(PortClaim.objects.values_list("host", flat=True)) == {""}


def cluster_triggers(alias: str) -> set[str]:
    """Return the names of the triggers on clusters_cluster in alias."""
    with connections[alias].cursor() as cursor:
        if connections[alias].vendor == "sqlite":
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = 'clusters_cluster'"
            )
        else:
            cursor.execute(
                "SELECT tgname FROM pg_trigger "
                "WHERE tgrelid = 'clusters_cluster'::regclass AND NOT tgisinternal"
            )
        return {name for (name,) in cursor.fetchall()}


def test_the_claim_and_journal_triggers_exist_after_migrate(alias: str) -> None:
    expected = {
        "sqlite": {
            "clusters_portclaim_insert",
            "clusters_portclaim_update",
            "clusters_portclaim_delete",
            *(
                f"kindler_{kind}_clusters_cluster_{op}"
                for kind in ("journal", "guard")
                for op in ("insert", "update", "delete")
            ),
            # The SQLite copy remembers deletes, and forgets one when the name returns.
            "kindler_tombstone_clusters_cluster_insert",
            "kindler_tombstone_clusters_cluster_delete",
        },
        "postgres": {
            "clusters_portclaim_insert",
            "clusters_portclaim_update",
            "clusters_portclaim_delete",
            "kindler_track_clusters_cluster_insert",
            "kindler_track_clusters_cluster_update",
            "kindler_track_clusters_cluster_delete",
            "kindler_stamp_clusters_cluster_insert",
            "kindler_stamp_clusters_cluster_update",
        },
    }
    assert cluster_triggers(alias) == expected[alias]


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_migrate_reinstalls_claim_triggers_a_table_rebuild_dropped(alias: str) -> None:
    portclaims.uninstall(connections[alias])
    assert "clusters_portclaim_insert" not in cluster_triggers(alias)
    portclaims.on_post_migrate(apps.get_app_config("clusters"), using=alias)
    assert {"clusters_portclaim_insert", "clusters_portclaim_update"} <= cluster_triggers(alias)
    make_cluster(name="porta", http_port=17021)
    with pytest.raises(IntegrityError):
        insert_raw(alias, name="portb", http_port=17021)
