"""The migrations describe the models exactly: nothing is left for makemigrations."""

from __future__ import annotations

from django.apps import apps
from django.db.migrations.autodetector import MigrationAutodetector
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.state import ProjectState


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
