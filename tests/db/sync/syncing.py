"""Helpers for the journal, replay and mirror tests."""

from __future__ import annotations

from typing import Any

from clusters.models import Cluster
from kindler.db.failover.pinning import pinned_alias
from kindler.db.models import Conflict, JournalEntry
from kindler.db.sync import writethrough
from kindler.db.sync.mirror import mirror
from tests.factories import make_cluster


def shared_cluster(**fields: Any) -> Cluster:
    """Create a cluster in PostgreSQL, mirror it, and return SQLite's copy."""
    cluster = make_cluster(using="postgres", **fields)
    mirror(full=True)
    return Cluster.objects.using("sqlite").get(uid=cluster.uid)


def on_postgres(name: str) -> Cluster:
    return Cluster.objects.using("postgres").get(name=name)


def on_sqlite(name: str) -> Cluster:
    return Cluster.objects.using("sqlite").get(name=name)


def journal_length() -> int:
    return JournalEntry.objects.using("sqlite").count()


def conflicts() -> list[tuple[str, str]]:
    """Return (kind, name) of every open conflict, oldest first."""
    rows = Conflict.objects.using("postgres").filter(resolved_at__isnull=True)
    return [(c.kind, c.name) for c in rows.order_by("id")]


def local_change(cluster: Cluster, **fields: Any) -> Cluster:
    """Change cluster on SQLite, as Kindler does while PostgreSQL is away."""
    with pinned_alias("sqlite"):
        for field, value in fields.items():
            setattr(cluster, field, value)
        cluster.save()
    return cluster


def remote_change(name: str, **fields: Any) -> Cluster:
    """Change the cluster in PostgreSQL, as another instance would."""
    cluster = on_postgres(name)
    for field, value in fields.items():
        setattr(cluster, field, value)
    with writethrough.suppressed():
        cluster.save()
    return cluster


def kindler(env: dict[str, Any], *args: str, check: bool = True) -> Any:
    """Run `manage.py args` as a separate Kindler process and return the result."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=str(settings_base_dir()),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode not in (0, 2):
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result


def settings_base_dir() -> Any:
    from django.conf import settings

    return settings.BASE_DIR
