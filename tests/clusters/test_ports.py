"""No two clusters hold one host port, whoever writes and however many at once."""

from __future__ import annotations

import contextvars
import json
import threading
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from clusters import lifecycle, preflight
from clusters.models import Cluster, OperationLog, PortClaim
from tests.conftest import BOTH
from tests.factories import cluster_fields, make_cluster, make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)

RACERS = 12


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


def insert_raw(alias: str, **overrides: Any) -> None:
    """Insert a cluster with plain SQL, as psql or a replay would: no model validation."""
    cluster = Cluster(**cluster_fields(**overrides))
    cluster.created_at = cluster.updated_at = timezone.now()
    fields = [field for field in Cluster._meta.concrete_fields if not field.primary_key]
    db = connections[alias]
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
        insert_raw(alias, name="portb", **{field: 17021})
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


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_migration_claims_existing_ports_and_skips_duplicates(alias: str) -> None:
    db = connections[alias]
    before, after = [("clusters", "0002_desired_stopped")], [("clusters", "0003_portclaim")]
    MigrationExecutor(db).migrate(before)
    try:
        insert_raw(alias, name="porta", http_port=17021, https_port=17022, pf_port=17023)
        insert_raw(alias, name="portb", http_port=17024, https_port=17021, pf_port=17025)
    finally:
        MigrationExecutor(db).migrate(after)
    found = claims(alias)
    # Back to the newest migrations: the monitor takes a PostgreSQL that lacks
    # one for unusable, and every later test would wait for it in vain.
    executor = MigrationExecutor(db)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert found == [
        (17021, "porta", "http_port"),
        (17022, "porta", "https_port"),
        (17023, "porta", "pf_port"),
        (17024, "portb", "http_port"),
        (17025, "portb", "pf_port"),
    ]
