"""Fixtures shared by every test: a PostgreSQL server the tests own."""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.loader import MigrationLoader

from clusters import ratelimit
from kindler.db.failover.monitor import State, monitor
from kindler.db.failover.pinning import pinned_alias
from tests.fakes import FOLDER as FAKES_FOLDER
from tests.fakes import FakeTools
from tests.pgserver import PostgresServer, free_port
from tests.workers import FileGroupScheduling, in_queue_order

# KINDLER_TEST_MODE=sqlite (tests/settings.py): no PostgreSQL at all, as in
# the default setup. Tests that need PostgreSQL are then left out or skipped,
# and say so.
SQLITE_ONLY = os.environ.get("KINDLER_TEST_MODE", "").strip().lower() == "sqlite"
BOTH = ["sqlite"] if SQLITE_ONLY else ["postgres", "sqlite"]
NEEDS_POSTGRES = "needs PostgreSQL: KINDLER_TEST_MODE=sqlite runs with SQLite alone"
# Failover, sync, chaos and multi-process tests are about PostgreSQL itself;
# the browser and compose tests gain nothing from a second run.
POSTGRES_ONLY_PATHS = (
    "tests/db/failover",
    "tests/db/sync",
    "tests/db/test_telemetry.py",
    "tests/test_chaos.py",
    "tests/test_multiprocess.py",
    "tests/browser",
    "tests/compose",
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"postgres: {NEEDS_POSTGRES} (skipped then)")


def pytest_report_header(config: pytest.Config) -> str:
    if SQLITE_ONLY:
        left_out = ", ".join(POSTGRES_ONLY_PATHS)
        return f"KINDLER_TEST_MODE=sqlite: SQLite alone, no PG_HOST; not collected: {left_out}"
    return "KINDLER_TEST_MODE=postgres: PostgreSQL (throwaway server) and SQLite"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Say who holds the SQLite test database when a test meets "database is locked"."""
    report = yield
    if report.failed and "database is locked" in str(report.longrepr):
        report.sections.append(("who holds the SQLite test database", lock_holders()))
    return report


def lock_holders() -> str:
    """Return the processes with the SQLite test database open, and this process's threads."""
    # The test database sits beside the configured one (test_<name>), so
    # any database file in that folder counts.
    folder = os.path.dirname(str(settings.DATABASES["sqlite"]["NAME"])) + os.sep
    holders = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if any(is_database(opened(f"/proc/{pid}/fd/{fd}"), folder) for fd in fds):
            holders.append(f"pid {pid}: {command.strip()}")
    threads = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks = [
        f"thread {threads.get(ident, ident)}:\n" + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
    ]
    return "\n".join(
        [f"database files in {folder} open in:", *holders, "", *open_transactions(), "", *stacks]
    )


def open_transactions() -> list[str]:
    """Describe every SQLite connection of this process inside a transaction.

    Django keeps a connection per thread; one left in a transaction holds
    the write lock (transaction_mode IMMEDIATE) until it is closed, even
    after its thread is idle or gone.
    """
    threads = {thread.ident: thread for thread in threading.enumerate()}
    found = ["SQLite connections inside a transaction:"]
    for wrapper in gc.get_objects():
        # type(), not isinstance(): isinstance would set up lazy objects.
        if not issubclass(type(wrapper), BaseDatabaseWrapper) or wrapper.vendor != "sqlite":
            continue
        raw = wrapper.connection
        if raw is None or not raw.in_transaction:
            continue
        owner = threads.get(wrapper._thread_ident)
        holders = sorted({type(referrer).__name__ for referrer in gc.get_referrers(wrapper)})
        thread = owner.name if owner else f"{wrapper._thread_ident} (gone)"
        found.append(
            f"{wrapper.alias} of thread {thread}"
            f": in_atomic_block={wrapper.in_atomic_block}"
            f" autocommit={wrapper.autocommit} savepoints={wrapper.savepoint_ids}"
            f" referred to by {', '.join(holders)}"
        )
    return found


def is_database(path: str, folder: str) -> bool:
    return path.startswith(folder) and ".db" in os.path.basename(path)


def opened(fd_link: str) -> str:
    """Return the path behind a /proc fd link, or "" when it closed meanwhile."""
    try:
        return os.readlink(fd_link)
    except OSError:
        return ""


def postgres_only(path: Any) -> bool:
    """Return True when path is in (or is) one of POSTGRES_ONLY_PATHS."""
    relative = os.path.relpath(str(path), ROOT)
    return any(
        relative == only or relative.startswith(only + os.sep) for only in POSTGRES_ONLY_PATHS
    )


def pytest_ignore_collect(collection_path: Any, config: pytest.Config) -> bool | None:
    # pytest asks this only of what it finds in a folder: files or folders
    # named on the command line are collected, and skipped below.
    if SQLITE_ONLY and postgres_only(collection_path):
        return True
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> FileGroupScheduling | None:
    """Share the tests among the workers by file and group (tests/workers.py) with loadfile."""
    if config.getvalue("dist") == "loadfile":
        return FileGroupScheduling(config, log)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Any:
    if SQLITE_ONLY:
        skip_postgres_only(items)
    result = yield
    # After every other plugin's order (pytest-randomly's, pytest-django's).
    if hasattr(config, "workerinput"):  # an xdist worker
        order = {
            nodeid: index for index, nodeid in enumerate(in_queue_order([i.nodeid for i in items]))
        }
        items.sort(key=lambda item: order[item.nodeid])
    return result


def skip_postgres_only(items: list[pytest.Item]) -> None:
    """Mark the tests that need PostgreSQL skipped, saying why."""
    skip = pytest.mark.skip(reason=NEEDS_POSTGRES)
    for item in items:
        marker = item.get_closest_marker("django_db")
        uses_postgres = marker is not None and "postgres" in (marker.kwargs.get("databases") or [])
        if (
            uses_postgres
            or item.get_closest_marker("postgres") is not None
            or postgres_only(item.path)
        ):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL for the whole run."""
    if SQLITE_ONLY:
        pytest.skip(NEEDS_POSTGRES)
    server = PostgresServer()
    server.init()
    server.start()
    yield server
    monitor.stop()
    server.destroy()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request: pytest.FixtureRequest) -> None:
    """Point the postgres alias at the throwaway server before databases are made."""
    if not SQLITE_ONLY:
        pg_server = request.getfixturevalue("pg_server")
        settings.DATABASES["postgres"].update(HOST=pg_server.host, PORT=pg_server.port)
    monitor.reset()


@pytest.fixture(autouse=True)
def _healthy_monitor(request: pytest.FixtureRequest) -> None:
    """Start every test on PostgreSQL when the test uses it."""
    marker = request.node.get_closest_marker("django_db")
    if marker is not None and "postgres" in (marker.kwargs.get("databases") or []):
        request.getfixturevalue("django_db_setup")
        request.getfixturevalue("pg_server").ensure_running()
        wait_for_state(State.PRIMARY)


@pytest.fixture
def no_probes() -> Iterator[None]:
    """No probing thread: only the test changes the database state.

    For tests that take PostgreSQL's tables or database away on purpose. A
    probe meanwhile would call it an outage, and the recovery after it would
    do the test's work (or copy rows into SQLite after the test's flush).
    The monitor starts first: after an earlier test's reset, the test's first
    query would otherwise start it anew, thread and all.
    """
    monitor.active_alias()
    monitor.stop()
    yield
    monitor.reset()


@pytest.fixture(autouse=True)
def _no_failed_attempts() -> None:
    """Start every test with no failed sign-ins or token guesses counted."""
    forget_failures()


def forget_failures() -> None:
    """Clear the failure counts and the marker of the latest failure."""
    cache.clear()
    marker = ratelimit.marker_path()
    if marker is not None:
        marker.unlink(missing_ok=True)


@pytest.fixture(params=BOTH)
def alias(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once on each database, with routing pinned to it."""
    with pinned_alias(request.param):
        yield request.param


def wait_for(check: Callable[[], Any], seconds: float = 30.0, every: float = 0.05) -> Any:
    """Poll check() until it returns something true; return that, or fail after seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"nothing came within {seconds} s")


def wait_for_state(state: State, timeout: float = 15.0) -> float:
    """Probe until the monitor reports state; return how long it took."""
    started = time.monotonic()
    try:
        wait_for(lambda: monitor.check_now().state is state, timeout)
    except AssertionError:
        raise AssertionError(f"monitor did not reach {state} within {timeout} s") from None
    return time.monotonic() - started


@pytest.fixture
def pg(pg_server: PostgresServer, transactional_db: None) -> Iterator[PostgresServer]:
    """The server, for tests that stop, kill or pause it; restored afterwards.

    Depends on transactional_db so it is torn down first: the database flush
    after the test needs the server running again.
    """
    yield pg_server
    pg_server.ensure_running()
    wait_for_state(State.PRIMARY)
    # This thread's connections died with the server; the flush needs new ones.
    connections.close_all()


@pytest.fixture
def kindler_env(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Environment for a Kindler subprocess that uses the test databases."""
    if SQLITE_ONLY:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "kindler.settings",
            "SQLITE_PATH": str(settings.DATABASES["sqlite"]["NAME"]),
            "KINDLER_HEALTH_INTERVAL": "0.2",
            "KINDLER_MIRROR_INTERVAL": "0",
        }
    pg_server = request.getfixturevalue("pg_server")
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kindler.settings",
        "PG_HOST": pg_server.host,
        "PG_PORT": str(pg_server.port),
        "PG_DATABASE": settings.DATABASES["postgres"]["NAME"],
        "PG_USER": pg_server.user,
        "PG_PASSWORD": pg_server.password,
        "SQLITE_PATH": str(settings.DATABASES["sqlite"]["NAME"]),
        "PG_CONNECT_TIMEOUT": "1",
        "KINDLER_HEALTH_INTERVAL": "0.2",
        "KINDLER_MIRROR_INTERVAL": "0",
    }


@dataclass
class WebServer:
    """A `python -m kindler.webserver` started by a test."""

    process: subprocess.Popen[bytes]
    port: int
    metrics: Path

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        """Return the status and the body of GET path."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def answers(self) -> bool:
        """Return True once a worker answers (with a page that is not /api/health)."""
        try:
            return self.get("/no-such-page")[0] in (302, 404)
        except OSError:
            return False

    def listeners(self) -> int:
        """Return how many sockets listen on the port: each worker opens its own."""
        port = f"{self.port:04X}"
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        return sum(1 for row in rows if row[1].endswith(f":{port}") and row[3] == "0A")

    def workers(self) -> list[int]:
        """Return the process ids of the server's workers (its child processes)."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return sorted(int(pid) for pid in found.stdout.split())


@pytest.fixture
def start_web_server(
    kindler_env: dict[str, Any], tmp_path: Path
) -> Iterator[Callable[..., WebServer]]:
    """Start the web server on the test databases (2 workers) with any extra settings.

    It is not waited for; whatever is still running at the end is killed. What
    the servers logged is printed at the end, so a failed test's report shows
    it (pytest shows captured output for failures only).
    """
    started: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def start(**extra: str) -> WebServer:
        port = free_port()
        metrics = tmp_path / "metrics"
        env = {
            **kindler_env,
            "KINDLER_BIND": f"127.0.0.1:{port}",
            "KINDLER_WORKERS": "2",
            "KINDLER_METRICS_DIR": str(metrics),
            "KINDLER_ACCESS_LOG": "/dev/null",
            **extra,
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = tmp_path / f"webserver-{port}.log"
        logs.append(log)
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "kindler.webserver"],
                env=env,
                cwd=settings.BASE_DIR,
                stdout=subprocess.DEVNULL,
                stderr=output,
                start_new_session=True,
            )
        started.append(process)
        return WebServer(process, port, metrics)

    yield start
    for process in started:
        # The whole group: workers a stopped server left behind go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for log in logs:
        tail = log.read_text(errors="replace")[-4000:]
        print(f"--- {log.name}, its last 4,000 characters:\n{tail}")


@pytest.fixture(autouse=True, scope="session")
def _fake_provider_binaries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Put the fake k3d, kind and docker first on PATH: no test runs the real ones.

    The interpreter's own folder comes next, so the fakes start with this
    Python rather than whatever `python3` a version manager provides.
    """
    saved = {name: os.environ.get(name) for name in ("PATH", "KINDLER_FAKE_STATE")}
    folders = [str(FAKES_FOLDER), os.path.dirname(sys.executable), os.environ.get("PATH", "")]
    os.environ["PATH"] = os.pathsep.join(folders)
    os.environ["KINDLER_FAKE_STATE"] = str(tmp_path_factory.mktemp("fake-tools"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def fakes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    """The fake provider executables with a state folder of this test's own."""
    state = tmp_path / "fake-tools"
    state.mkdir()
    monkeypatch.setenv("KINDLER_FAKE_STATE", str(state))
    for knob in ("KINDLER_FAKE_FAIL", "KINDLER_FAKE_SLEEP", "KINDLER_FAKE_CHILD"):
        monkeypatch.delenv(knob, raising=False)
    return FakeTools(state)


@pytest.fixture
def roles(db: None) -> None:
    """Have the Viewers and Operators groups on every database, as migration 0004 makes them.

    A transactional test's flush empties auth_group; this runs the
    migration's own data step again, on the historical models, when so.
    """
    migration = importlib.import_module("clusters.migrations.0004_roles")
    for alias in (alias for alias in settings.DATABASES if alias != "default"):
        if Group.objects.using(alias).filter(name__in=migration.ROLES).count() == len(
            migration.ROLES
        ):
            continue
        state = MigrationLoader(connections[alias]).project_state(("clusters", "0004_roles"))
        migration.add_roles(state.apps, SimpleNamespace(connection=connections[alias]))
