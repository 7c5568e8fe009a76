"""kindler.__version__ moves with the migrations, and CHANGELOG.md has its notes."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db.migrations.loader import MigrationLoader

from kindler import __version__

# Each version's newest migration of every Kindler app, as it shipped.
SCHEMAS = {
    "0.1.0": [("clusters", "0006_hooks"), ("kindler_db", "0003_identity_history")],
    "0.2.0": [
        ("clusters", "0009_scale_indexes"),
        ("kindler_db", "0006_journalentry_schema"),
    ],
    "0.3.0": [
        ("clusters", "0010_desired_state_present"),
        ("kindler_db", "0006_journalentry_schema"),
    ],
    "0.4.0": [
        ("clusters", "0011_cluster_created_by"),
        ("kindler_db", "0006_journalentry_schema"),
    ],
    "0.5.0": [
        ("clusters", "0011_cluster_created_by"),
        ("kindler_db", "0007_acknowledgedversion"),
    ],
}
KINDLER_APPS = ("clusters", "kindler_db")


def newest_migrations() -> list[tuple[str, str]]:
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    return sorted(node for node in graph.leaf_nodes() if node[0] in KINDLER_APPS)


def test_the_version_moves_with_every_migration() -> None:
    newest = newest_migrations()
    if SCHEMAS.get(__version__) != newest:
        raise AssertionError(
            f"The migrations are now {newest}, but kindler.__version__ is {__version__}, "
            f"recorded with {SCHEMAS.get(__version__)}. Raise kindler.__version__, add the new "
            "version to SCHEMAS in tests/test_versions.py with these migrations, and write its "
            "upgrade notes in CHANGELOG.md."
        )


def test_no_two_versions_share_a_schema() -> None:
    schemas = [tuple(schema) for schema in SCHEMAS.values()]
    assert len(set(schemas)) == len(schemas)


def test_the_changelog_has_notes_for_every_version() -> None:
    changelog = (Path(settings.BASE_DIR) / "CHANGELOG.md").read_text()
    headings = [line[3:] for line in changelog.splitlines() if line.startswith("## ")]
    assert headings == sorted(SCHEMAS, key=lambda v: tuple(map(int, v.split("."))), reverse=True)
    for version, schema in SCHEMAS.items():
        listed = ", ".join(f"`{app}.{name}`" for app, name in schema)
        assert f"Schema: {listed}." in changelog, version
