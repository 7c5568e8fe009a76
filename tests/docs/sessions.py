"""Run a page's shell examples as a reader would: in order, in a fresh copy, offline.

Each session has a copy of the checkout (the files git knows, this checkout's .venv linked in)
and its own network namespace, so the examples' ports (8000, 5432, 18180, ...) are its own and
never meet another test's or another program's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.docs.pages import ROOT, Block
from tests.pgserver import PostgresServer

API_TOKEN = "docs-example-token-" + "0" * 24  # tokens under 32 characters stop the start
SERVER_LOG = "kindler-server.log"
# Variables a reader has not set: nothing of the machine running the tests leaks in.
CLEARED_PREFIXES = ("PG_", "KINDLER_", "SQLITE_", "DJANGO_", "PROMETHEUS_", "PYTEST_")
CLEARED = {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "TIME_ZONE", "CSRF_TRUSTED_ORIGINS"}


def namespaces_available() -> bool:
    """Return whether this process may make a network namespace (root, util-linux)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        return False
    result = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    return result.returncode == 0


def fresh_copy(destination: Path) -> Path:
    """Copy the files git knows (committed or not, never ignored ones) into destination."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    # Building a .venv needs the network and minutes; the reader's first scripts/run made one.
    (destination / ".venv").symlink_to(ROOT / ".venv")
    return destination


class ExamplePostgres(PostgresServer):
    """The PostgreSQL the README's example names: 127.0.0.1:5432, kindler / change-me."""

    password = "change-me"

    def __init__(self, holder: int) -> None:
        super().__init__()
        self.port = 5432
        self.holder = holder

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args[0] != "pg_ctl" or "start" not in args:
            return super()._run(*args, check=check)
        # The postmaster must listen inside the session's network namespace.
        command = ["nsenter", "-t", str(self.holder), "-n", "runuser", "-u", "postgres", "--"]
        return subprocess.run(
            [*command, str(self.bindir / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def create_example_database(self) -> None:
        createdb = [str(self.bindir / "createdb"), "-h", str(self.socketdir)]
        subprocess.run(
            [*createdb, "-p", str(self.port), "-U", self.user, "kindler"],
            check=True,
            capture_output=True,
            user=self.os_user,
            timeout=60,
        )


class Session:
    """One page's examples: a copy, a namespace, and what the examples need started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.copy = fresh_copy(root / "kindler")
        self.state = root / "env.sh"
        self.state.write_text("")
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(CLEARED_PREFIXES) and name not in CLEARED
        }
        self.env["PATH"] = os.pathsep.join([str(self.copy / "tests" / "fakes"), self.env["PATH"]])
        self.env["KINDLER_FAKE_STATE"] = str(root / "fakes")
        self.env["KINDLER_CHILD_ENV"] = "KINDLER_FAKE_*"
        self.env["KINDLER_API_TOKEN"] = API_TOKEN
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        self.server: subprocess.Popen[bytes] | None = None
        self.postgres: ExamplePostgres | None = None
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/net") == own:
            assert time.monotonic() < deadline, "unshare did not make a network namespace"
            time.sleep(0.01)
        self.inside(["ip", "link", "set", "lo", "up"], check=True)

    def inside(self, command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
        """Run a command in the session's namespace and copy."""
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            ["nsenter", "-t", str(self.holder.pid), "-n", *command],
            cwd=self.copy,
            env=self.env,
            capture_output=True,
            text=True,
            **options,
        )

    def run(self, block: Block, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run one example with the variables earlier examples exported."""
        if block.value == "server":
            self.start_server()
        if block.value == "postgres":
            self.start_postgres()
        script = (
            f"set -eo pipefail\nsource {self.state}\ncd {self.copy}\n"
            f"{block.text}\nexport -p > {self.state}\n"
        )
        return self.inside(["bash", "-c", script], timeout=timeout)

    def start_server(self) -> None:
        """Start Kindler as the API page says (scripts/run with the token set), once."""
        if self.server is not None:
            return
        log = (self.root / SERVER_LOG).open("wb")
        run = f"source {self.state}; exec scripts/run"
        self.server = subprocess.Popen(
            ["nsenter", "-t", str(self.holder.pid), "-n", "bash", "-c", run],
            cwd=self.copy,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        probe = ["curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:8000/api/health"]
        deadline = time.monotonic() + 120
        while self.inside(probe, timeout=10).returncode != 0:
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Kindler did not start:\n{self.server_log()}")
            time.sleep(0.5)

    def server_log(self) -> str:
        path = self.root / SERVER_LOG
        return path.read_text(errors="replace") if path.exists() else ""

    def start_postgres(self) -> None:
        """Start the PostgreSQL the README's example points at, once."""
        if self.postgres is not None:
            return
        self.postgres = ExamplePostgres(self.holder.pid)
        self.postgres.init()
        self.postgres.start()
        self.postgres.create_example_database()

    def close(self) -> None:
        if self.server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(timeout=10)
        if self.postgres is not None:
            self.postgres.stop("immediate")
            shutil.rmtree(self.postgres.root, ignore_errors=True)
        self.holder.kill()
        self.holder.wait(timeout=10)
