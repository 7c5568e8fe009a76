"""A new instance migrates its own SQLite file (kindler/db/sync/prepare.py).

Here, not in tests/db/sync/: the promise holds with PostgreSQL and without it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

from clusters.models import Cluster
from kindler.db.failover.monitor import expected_migrations
from tests.conftest import BOTH, SQLITE_ONLY, WebServer, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(databases=BOTH, transaction=True)]

TOKEN = "prepare-test-token-" + "x" * 32
MANAGE = str(Path(settings.BASE_DIR) / "manage.py")


def applied(path: Path) -> list[tuple[str, str]]:
    """Return the migrations the SQLite file at path records, with any duplicates."""
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT app, name FROM django_migrations").fetchall())


def manage(env: dict[str, Any], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, MANAGE, *args],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def saved_names(fresh: Path) -> list[str]:
    """Return the cluster names where this mode keeps them: PostgreSQL, or the fresh file."""
    if SQLITE_ONLY:
        with sqlite3.connect(fresh) as db:
            return [name for (name,) in db.execute("SELECT name FROM clusters_cluster")]
    connections["postgres"].close()
    return list(Cluster.objects.using("postgres").values_list("name", flat=True))


def test_a_command_on_a_fresh_sqlite_file_migrates_it_and_writes(
    kindler_env: dict[str, Any], tmp_path: Path
) -> None:
    fresh = tmp_path / "new-instance.db"
    env = {**kindler_env, "SQLITE_PATH": str(fresh)}
    done = manage(env, "cluster", "create", "fresh", "--host", "docker-1")
    out, err = done.communicate(timeout=120)
    assert (done.returncode, out.split(". ")[0]) == (0, "Cluster fresh added on docker-1")
    assert "Migrating this instance's SQLite file" in err
    assert saved_names(fresh) == ["fresh"]
    assert expected_migrations() <= set(applied(fresh))


def test_processes_starting_together_migrate_the_file_once(
    kindler_env: dict[str, Any], tmp_path: Path
) -> None:
    fresh = tmp_path / "together.db"
    env = {**kindler_env, "SQLITE_PATH": str(fresh)}
    started = [manage(env, "cluster", "list", "--json") for _ in range(3)]
    results = [(process.communicate(timeout=180), process.returncode) for process in started]
    assert [(out, code) for (out, _), code in results] == [("[]\n", 0)] * 3
    migrating = [err.count("Migrating this instance's SQLite file") for (_, err), _ in results]
    assert sorted(migrating) == [0, 0, 1]
    found = applied(fresh)
    assert len(found) == len(set(found))


def test_the_web_server_on_a_fresh_sqlite_file_takes_writes(
    start_web_server: Callable[..., WebServer], tmp_path: Path
) -> None:
    fresh = tmp_path / "web.db"
    server = start_web_server(SQLITE_PATH=str(fresh), KINDLER_API_TOKEN=TOKEN)
    wait_for(server.answers, seconds=90)
    body = json.dumps({"name": "webfresh", "host": "docker-1"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/api/clusters",
        data=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
    status, text = server.get("/api/health", TOKEN)
    assert (status, json.loads(text)["database"]["state"]) == (200, "primary")
    listed = server.get("/api/clusters", TOKEN)
    assert (listed[0], [row["name"] for row in json.loads(listed[1])]) == (200, ["webfresh"])


def test_the_reconciler_on_a_fresh_sqlite_file_migrates_it_and_runs(
    kindler_env: dict[str, Any], tmp_path: Path
) -> None:
    fresh = tmp_path / "reconciler.db"
    env = {**kindler_env, "SQLITE_PATH": str(fresh)}
    done = manage(env, "reconcile", "--once")
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert "Migrating this instance's SQLite file" in err
    assert expected_migrations() <= set(applied(fresh))
