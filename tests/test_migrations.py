"""The migrations describe the models exactly, and expand before they contract.

Instances of two releases share one PostgreSQL during a rolling upgrade: a
column a migration adds must take rows from code that does not know it.
"""

from __future__ import annotations

import uuid

import pytest
from django.apps import apps
from django.db import connections, models
from django.db.migrations import Migration
from django.db.migrations.autodetector import MigrationAutodetector
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import (
    AddField,
    AlterField,
    DeleteModel,
    RemoveField,
    RenameField,
    RenameModel,
)
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState
from django.db.models import NOT_PROVIDED, Field

from clusters.models import Cluster
from tests.conftest import BOTH
from tests.factories import make_cluster


def test_makemigrations_finds_nothing_to_write() -> None:
    # makemigrations --check without a database: the last migrations' state against the models.
    loader = MigrationLoader(None, ignore_no_migrations=True)
    changes = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps)).changes(
        graph=loader.graph
    )
    described = {
        app: [
            operation.describe() for migration in migrations for operation in migration.operations
        ]
        for app, migrations in changes.items()
    }
    assert described == {}


# Migrations written before the rule, each with what makes it safe now.
BEFORE_THE_RULE = {
    ("clusters", "0005_placement", "AddField cluster.host"): "0008 gives it DEFAULT ''",
    ("clusters", "0005_placement", "AddField portclaim.host"): "0008 gives it DEFAULT ''",
    ("kindler_db", "0003_identity_history", "RemoveField syncrun.mark"): "no release reads it",
}
KINDLER_APPS = ("clusters", "kindler_db")
LATER = "a release later, once no instance of earlier code is left (docs/deployment.md)"


def rule_breaks(app: str, migration: Migration, state: ProjectState) -> list[str]:
    """Return how each operation of migration, applied from state, breaks expand/contract."""
    found = []
    for operation in migration.operations:
        what = f"{type(operation).__name__} {getattr(operation, 'model_name', '')}"
        if isinstance(operation, (AddField, AlterField, RemoveField, RenameField)):
            what += f".{operation.name}"
        where = f"{app}.{migration.name}: {what}"
        problem = None
        if isinstance(operation, AddField) and not tolerant(operation.field):
            problem = (
                f"{where} adds a NOT NULL column with no database default: instances of earlier "
                "code insert rows without it and fail. Write it with db_default=<value> (keep "
                "default= for Django) or null=True; make it NOT NULL " + LATER + "."
            )
        elif isinstance(operation, AlterField):
            before = state.models[app, operation.model_name_lower].fields[operation.name]
            if tolerant(before) and not tolerant(operation.field):
                problem = (
                    f"{where} tightens a column (NOT NULL, or its database default dropped): "
                    "instances of earlier code write rows without it. Keep db_default= or "
                    "null=True now; tighten " + LATER + "."
                )
        elif isinstance(operation, (RemoveField, RenameField, DeleteModel, RenameModel)):
            problem = (
                f"{where} drops or renames what instances of earlier code still read and write. "
                "Stop using it in one release and drop or rename it " + LATER + "; then list it "
                "in BEFORE_THE_RULE here with the release that stopped using it."
            )
        if problem is not None and (app, migration.name, what) not in BEFORE_THE_RULE:
            found.append(problem)
        operation.state_forwards(app, state)
    return found


def tolerant(field: Field) -> bool:
    """Return True when earlier code, which knows nothing of field, can still write the row."""
    return bool(field.null) or field.db_default is not NOT_PROVIDED


def test_every_migration_expands_first_and_contracts_later() -> None:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    found = []
    for app, name in sorted(loader.disk_migrations):
        if app in KINDLER_APPS:
            state = loader.project_state((app, name), at_end=False)
            found += rule_breaks(app, loader.disk_migrations[app, name], state)
    assert found == []


def test_the_columns_added_before_the_rule_have_a_database_default_now() -> None:
    final = MigrationLoader(None, ignore_no_migrations=True).project_state()
    added = [
        (app, what.split()[1]) for app, _, what in BEFORE_THE_RULE if what.startswith("AddField")
    ]
    assert [
        (app, path, final.models[app, path.split(".")[0]].fields[path.split(".")[1]].db_default)
        for app, path in added
    ] == [("clusters", "cluster.host", ""), ("clusters", "portclaim.host", "")]


def written(name: str, *operations: Operation) -> Migration:
    """Return a clusters migration called name, made of operations, as a file would declare it."""
    declared = type("Migration", (Migration,), {"operations": list(operations)})
    return declared(name, "clusters")


def test_a_not_null_column_without_a_database_default_is_refused_with_the_way_to_write_it() -> None:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    migration = written(
        "0999_size",
        AddField("cluster", "size", models.IntegerField(default=3)),
        AddField("cluster", "weight", models.IntegerField(db_default=1)),
        AddField("cluster", "note", models.TextField(null=True)),
    )
    assert rule_breaks("clusters", migration, loader.project_state()) == [
        "clusters.0999_size: AddField cluster.size adds a NOT NULL column with no database "
        "default: instances of earlier code insert rows without it and fail. Write it with "
        "db_default=<value> (keep default= for Django) or null=True; make it NOT NULL "
        + LATER
        + "."
    ]


def test_tightening_or_dropping_a_column_is_refused_until_a_later_release() -> None:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    migration = written(
        "0999_tighten",
        AlterField("operationlog", "hooks", models.TextField(blank=True)),
        RemoveField("cluster", "server_ip"),
    )
    assert rule_breaks("clusters", migration, loader.project_state()) == [
        "clusters.0999_tighten: AlterField operationlog.hooks tightens a column (NOT NULL, or its "
        "database default dropped): instances of earlier code write rows without it. Keep "
        "db_default= or null=True now; tighten " + LATER + ".",
        "clusters.0999_tighten: RemoveField cluster.server_ip drops or renames what instances of "
        "earlier code still read and write. Stop using it in one release and drop or rename it "
        + LATER
        + "; then list it in BEFORE_THE_RULE here with the release that stopped using it.",
    ]


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_cluster_inserted_without_the_host_column_is_unplaced(alias: str) -> None:
    model = make_cluster(using=alias, name="known")
    columns = [
        str(field.column)
        for field in Cluster._meta.concrete_fields
        if field.column not in ("id", "host", "name", "uid", "http_port", "https_port", "pf_port")
    ]
    listed = ", ".join(columns)
    with connections[alias].cursor() as cursor:
        # As code from before the host column writes a cluster.
        cursor.execute(
            f"INSERT INTO clusters_cluster (uid, name, http_port, https_port, pf_port, {listed}) "
            f"SELECT %s, 'earlier', 21001, 21002, 21003, {listed} FROM clusters_cluster "
            "WHERE name = 'known'",
            [uuid.uuid4().hex if alias == "sqlite" else str(uuid.uuid4())],
        )
    assert model.host != ""
    assert Cluster.objects.using(alias).get(name="earlier").host == ""
