"""A rolling upgrade under write load: two instances on one PostgreSQL, one upgraded at a time.

Both start on earlier code (a real checkout, tests/earlier.py). Writes go to
both all along. One instance is stopped, `migrate` of this code runs, and it
starts again on this code while the other, still on earlier code, keeps
writing to the newer schema; then the other is upgraded the same way.
Nothing acknowledged may be missing from PostgreSQL, and no request may get
a 500 (docs/deployment.md, "Upgrading instances one at a time").
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import wait_for
from tests.earlier import ROOT, checkout, environment, manage
from tests.pgserver import PostgresServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# Main just before this release's expand/contract work: no kindler_schema,
# clusters_cluster.host NOT NULL with no database default.
EARLIER = "a6418f5"
TOKEN = "rolling-upgrade-token-" + "x" * 24
STEADY_SECONDS = 2.0


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with checkout(EARLIER, tmp_path_factory.mktemp("rolling") / "kindler") as folder:
        yield folder


class Instance:
    """One Kindler web server, run from a checkout's folder."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = {**env, "KINDLER_BIND": f"127.0.0.1:{self.port}", "KINDLER_API_TOKEN": TOKEN}
        self.env.update(KINDLER_WORKERS="2", KINDLER_ACCESS_LOG="off")
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, folder: Path) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kindler.webserver"],
                cwd=folder,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        wait_for(lambda: self.state() == "primary", seconds=90, every=0.2)

    def state(self) -> str | None:
        try:
            asked = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/api/health",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            with urllib.request.urlopen(asked, timeout=5) as answer:
                return str(json.loads(answer.read())["database"]["state"])
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


class Writer:
    """Create clusters through both instances in turn until stopped; count every answer."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.statuses: Counter[int | str] = Counter()
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            instance = self.instances[number % len(self.instances)]
            name = f"roll-{number:04d}"
            port = 20000 + 3 * number
            body = {"name": name, "http_port": port, "https_port": port + 1, "pf_port": port + 2}
            self.statuses[self._post(instance.port, body)] += 1
            number += 1

    def _post(self, port: int, body: dict[str, object]) -> int | str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/clusters",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                self.acknowledged.append(str(body["name"]))
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            # Stopped for its upgrade: nothing was sent, nothing acknowledged.
            time.sleep(0.05)
            return "refused"


def names_in_postgres(pg_server: PostgresServer, database: str) -> set[str]:
    conn = psycopg2.connect(**pg_server.connect_kwargs(database))
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT name FROM clusters_cluster")
            return {name for (name,) in cursor}
    finally:
        conn.close()


def test_a_rolling_upgrade_under_write_load_answers_no_500_and_loses_nothing(
    earlier: Path, pg_server: PostgresServer, tmp_path: Path
) -> None:
    database = "rolling_" + secrets.token_hex(4)
    pg_server.create_database(database)
    one = Instance(environment(pg_server, database, tmp_path / "one.db"), tmp_path / "one.log")
    two = Instance(environment(pg_server, database, tmp_path / "two.db"), tmp_path / "two.log")
    manage(earlier, one.env, "migrate", "-v", "0")
    manage(earlier, two.env, "migrate", "--database", "sqlite", "-v", "0")
    one.start(earlier)
    two.start(earlier)
    try:
        with Writer([one, two]) as writer:
            time.sleep(STEADY_SECONDS)
            two.stop()
            # PostgreSQL gets the new schema while the earlier instance writes.
            manage(ROOT, two.env, "migrate", "-v", "0")
            two.start(ROOT)
            time.sleep(STEADY_SECONDS)
            one.stop()
            one.start(ROOT)
            time.sleep(STEADY_SECONDS)
    finally:
        one.stop()
        two.stop()
    assert writer.statuses[500] == 0, writer.statuses
    assert len(writer.acknowledged) > 20, writer.statuses
    assert set(writer.acknowledged) - names_in_postgres(pg_server, database) == set()
