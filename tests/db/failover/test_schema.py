"""The schema a database records, and an instance older than it (kindler/db/failover/schema.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connections
from django.db.migrations import Migration
from django.db.migrations.operations import AddField
from django.db.models import IntegerField
from django.test import Client

from clusters.models import Cluster
from kindler import __version__
from kindler.db.failover import schema
from kindler.db.failover.monitor import State, monitor
from kindler.db.models import JournalEntry
from tests.conftest import BOTH, wait_for, wait_for_state
from tests.factories import make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)

FUTURE = ("clusters", "0999_future")
TOKEN = "schema-test-token-" + "x" * 32
UNKNOWN = (
    f"upgrade required: the database holds schema 9.0.0, this instance is {__version__} "
    "(clusters.0999_future unknown here)"
)


def recorded() -> dict[tuple[str, str], tuple[str, str]]:
    with connections["postgres"].cursor() as cursor:
        cursor.execute(f"SELECT app, name, fingerprint, version FROM {schema.TABLE}")
        return {(app, name): (print_, version) for app, name, print_, version in cursor}


def execute(sql: str, params: list[str]) -> None:
    with connections["postgres"].cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def newer_database() -> Iterator[None]:
    """PostgreSQL as a later release's migrate leaves it: a migration this code lacks."""
    execute(
        f"INSERT INTO {schema.TABLE} VALUES (%s, %s, %s, %s, %s)",
        [*FUTURE, "f" * 64, "9.0.0", "2026-12-07T00:00:00+00:00"],
    )
    yield
    execute(f"DELETE FROM {schema.TABLE} WHERE app = %s AND name = %s", list(FUTURE))
    # Upgraded: the recovery runs now, not beside the flush that ends the test.
    wait_for_state(State.PRIMARY)


def written(*operations: AddField) -> Migration:
    declared = type("Migration", (Migration,), {"operations": list(operations)})
    return declared("0999_future", "clusters")


def test_migrate_records_every_migration_with_its_fingerprint_and_version() -> None:
    rows = recorded()
    assert set(rows) == set(schema.known())
    assert rows["clusters", "0008_expand_defaults"] == (
        schema.known()["clusters", "0008_expand_defaults"],
        __version__,
    )


def test_the_fingerprint_is_the_operations_not_the_name() -> None:
    size = written(AddField("cluster", "size", IntegerField(null=True)))
    same = written(AddField("cluster", "size", IntegerField(null=True)))
    other = written(AddField("cluster", "size", IntegerField(db_default=0)))
    assert schema.fingerprint(size) == schema.fingerprint(same)
    assert schema.fingerprint(size) != schema.fingerprint(other)


def test_another_process_computes_the_same_fingerprints() -> None:
    code = (
        "import django, json; django.setup(); from kindler.db.failover import schema; "
        "print(json.dumps(sorted(f'{a}.{n} {p}' for (a, n), p in schema.known().items())))"
    )
    env = {"DJANGO_SETTINGS_MODULE": "kindler.settings", "PG_HOST": "", "PATH": "/usr/bin:/bin"}
    env["SQLITE_PATH"] = str(settings.DATABASES["sqlite"]["NAME"])
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == sorted(f"{a}.{n} {p}" for (a, n), p in schema.known().items())


def test_an_unknown_migration_makes_postgres_unusable_and_says_upgrade(
    newer_database: None,
) -> None:
    snapshot = monitor.check_now()
    assert snapshot.probe is not None
    assert (snapshot.state, snapshot.probe.error, snapshot.probe.schema) == (
        State.FALLBACK,
        UNKNOWN,
        "9.0.0",
    )


def test_another_fingerprint_under_a_known_name_says_upgrade() -> None:
    execute(
        f"UPDATE {schema.TABLE} SET fingerprint = %s WHERE app = %s AND name = %s",
        ["0" * 64, "clusters", "0008_expand_defaults"],
    )
    try:
        snapshot = monitor.check_now()
    finally:
        execute(
            f"UPDATE {schema.TABLE} SET fingerprint = %s WHERE app = %s AND name = %s",
            [
                schema.known()["clusters", "0008_expand_defaults"],
                "clusters",
                "0008_expand_defaults",
            ],
        )
    assert snapshot.probe is not None
    assert snapshot.probe.error == (
        f"upgrade required: the database holds schema {__version__}, this instance is "
        f"{__version__} (clusters.0008_expand_defaults written differently here)"
    )


def test_writes_get_a_503_that_says_upgrade_and_reads_still_work(
    newer_database: None, client: Client, settings: Any
) -> None:
    settings.KINDLER_API_TOKEN = TOKEN
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    monitor.check_now()
    make_cluster(using="sqlite", name="mirrored")
    created = client.post(
        "/api/clusters",
        json.dumps({"name": "late"}),
        content_type="application/json",
        headers=bearer,
    )
    assert (created.status_code, created.json()) == (503, {"detail": schema.OLDER})
    page = client.post("/new/", {"name": "late"})
    assert (page.status_code, schema.OLDER in page.content.decode()) == (503, True)
    listed = client.get("/api/clusters", headers=bearer)
    assert (listed.status_code, [row["name"] for row in listed.json()]) == (200, ["mirrored"])
    assert Cluster.objects.using("sqlite").filter(name="late").count() == 0


def test_a_cluster_command_that_writes_is_refused_with_the_same_words(
    newer_database: None,
) -> None:
    monitor.check_now()
    with pytest.raises(CommandError, match=f"^{re.escape(schema.OLDER)}$"):
        call_command("cluster", "create", "late", stdout=StringIO())
    assert call_command("cluster", "list", "--json", stdout=StringIO()) is None


def test_sync_db_by_hand_leaves_the_journal_for_the_upgraded_instance(
    newer_database: None,
) -> None:
    with pytest.raises(CommandError) as refused:
        call_command("sync_db", stdout=StringIO())
    assert str(refused.value) == f"{schema.OLDER} ({UNKNOWN})"


def test_health_and_dbstatus_say_upgrade_required_with_both_versions(
    newer_database: None, client: Client, settings: Any
) -> None:
    monitor.check_now()
    settings.KINDLER_API_TOKEN = "health-token-" + "x" * 20
    token = f"Bearer {settings.KINDLER_API_TOKEN}"
    body = client.get("/api/health", HTTP_AUTHORIZATION=token).json()
    assert (body["status"], body["database"]["schema"]) == (
        "upgrade required",
        {"code": __version__, "database": "9.0.0", "upgrade_required": True},
    )
    out = StringIO()
    call_command("dbstatus", stdout=out)
    assert f"Schema:          code {__version__}, database 9.0.0: upgrade required" in (
        out.getvalue().splitlines()
    )


def test_the_journal_waits_for_an_upgraded_instance(newer_database: None) -> None:
    monitor.mark_down("test: an outage before the upgrade")
    wait_for_state(State.FALLBACK)
    make_cluster(using="sqlite", name="journaled")
    assert JournalEntry.objects.using("sqlite").count() == 1
    # Several probe intervals: PostgreSQL answers, but nothing is replayed.
    time.sleep(10 * settings.KINDLER_HEALTH_INTERVAL)
    monitor.check_now()
    assert JournalEntry.objects.using("sqlite").count() == 1
    assert not Cluster.objects.using("postgres").filter(name="journaled").exists()
    execute(f"DELETE FROM {schema.TABLE} WHERE app = %s AND name = %s", list(FUTURE))
    wait_for_state(State.PRIMARY)
    wait_for(lambda: Cluster.objects.using("postgres").filter(name="journaled").exists())
