"""A throwaway PostgreSQL server the tests own, so they can break it."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. "
    "Install them with `apt-get install -y postgresql` (Debian/Ubuntu) "
    "or set KINDLER_PG_BINDIR to the folder that holds them."
)


def find_bindir() -> Path:
    """Return the folder with initdb and pg_ctl, newest version first."""
    candidates = [os.environ.get("KINDLER_PG_BINDIR", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (
            candidate
            and (Path(candidate) / "initdb").exists()
            and (Path(candidate) / "pg_ctl").exists()
        ):
            return Path(candidate)
    raise RuntimeError(INSTALL_HINT)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Return count distinct free ports (held open together while they are picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class PostgresServer:
    """initdb + pg_ctl on a free port, with ways to stop, kill and pause it."""

    user = "kindler"
    password = "kindler-test-password"

    def __init__(self, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        # Tests trade durability for speed; a benchmark that kills the server
        # and counts acknowledged commits needs them on (durable=True).
        self.durable = durable
        # Extra server settings, passed as -c name=value at every start.
        self.settings = dict(settings or {})
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="kindler-pg-"))
        self.datadir = self.root / "data"
        self.socketdir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        # PostgreSQL refuses to run as root; run it as the postgres OS user.
        self.os_user = "postgres" if os.geteuid() == 0 else None
        self.paused: list[int] = []

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            user=self.os_user,
            timeout=120,
        )

    def init(self) -> None:
        """Make the data folder: a copy of an initdb made once for this user and version."""
        self.socketdir.mkdir(parents=True)
        if self.os_user:
            shutil.chown(self.root, self.os_user)
            shutil.chown(self.socketdir, self.os_user)
        # cp -a keeps the owner and the 0700 mode PostgreSQL insists on.
        subprocess.run(["cp", "-a", str(self.template()), str(self.datadir)], check=True)

    def template(self) -> Path:
        """Return a data folder fresh from initdb, made by the first server that asks.

        initdb takes about four times the processor time of copying its result,
        and the suite makes some fifty servers. The folder is named after
        everything initdb is given, so a new PostgreSQL version or password gets
        a new one; it is made aside and renamed into place, so a server never
        copies a half-made one, and two processes making it at once both succeed.

        The copies share initdb's system identifier, which Kindler's identity
        check compares (kindler.db.sync.identity): as a base backup or a
        Patroni replica would, unlike two servers made apart. A test that needs
        Kindler to tell two servers apart by it runs initdb itself.
        """
        template = self.template_folder()
        if template.is_dir():
            return template
        template.parent.mkdir(mode=0o755, exist_ok=True)
        making = Path(tempfile.mkdtemp(prefix=f"{template.name}-", dir=template.parent))
        if self.os_user:
            shutil.chown(making, self.os_user)
        pwfile = making / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.os_user:
            shutil.chown(pwfile, self.os_user)
        try:
            self._run(
                "initdb",
                "-D",
                str(making / "data"),
                "-U",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            os.rename(making / "data", template)
        except OSError:
            if not template.is_dir():  # not made by another process meanwhile
                raise
        finally:
            shutil.rmtree(making, ignore_errors=True)
        return template

    def template_folder(self) -> Path:
        """Return where template() keeps the initdb for this version, user and password."""
        initdb = self.bindir / "initdb"
        key = hashlib.sha256(
            f"{initdb}|{initdb.stat().st_mtime_ns}|{self.user}|{self.password}".encode()
        ).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"kindler-pg-templates-{os.geteuid()}" / key

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.paused = []
        options = (
            f"-p {self.port} -k {self.socketdir} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop with the given mode (smart, fast or immediate)."""
        self.resume()
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None

    def backend_pids(self) -> list[int]:
        """Return the pids of the postmaster's children (backends, workers)."""
        postmaster = self.postmaster_pid()
        if postmaster is None:
            return []
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except FileNotFoundError:
            return []

    def kill(self) -> None:
        """kill -9 the postmaster and every backend, as a crash would."""
        self.resume()
        pids = [pid for pid in [self.postmaster_pid(), *self.backend_pids()] if pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def pause(self, backends: bool = False) -> None:
        """SIGSTOP the postmaster (and, if asked, every backend)."""
        pids = [pid for pid in [self.postmaster_pid()] if pid]
        if backends:
            pids += self.backend_pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.paused.extend(pids)

    def resume(self) -> None:
        """SIGCONT whatever pause() stopped."""
        for pid in self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused = []

    def is_running(self) -> bool:
        """Return whether postmaster.pid names a live postmaster, as `pg_ctl status` checks.

        Read here rather than asked of pg_ctl: every test that uses PostgreSQL
        asks, and a pg_ctl run as the postgres user forks the whole pytest worker.
        """
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        # A killed postmaster not yet reaped, or its pid taken by another program, is no server.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state = stat[stat.rindex(")") + 2]
        return name == "postgres" and state != "Z"

    def ensure_running(self) -> None:
        """Bring the server back, whatever a test did to it."""
        self.resume()
        if not self.is_running():
            self.start()

    def standby(self, settings: dict[str, str] | None = None) -> PostgresServer:
        """Return a streaming standby of this server (pg_basebackup -R), started on its own port."""
        standby = PostgresServer(durable=self.durable, settings=settings)
        standby.socketdir.mkdir(parents=True)
        if standby.os_user:
            shutil.chown(standby.root, standby.os_user)
            shutil.chown(standby.socketdir, standby.os_user)
        # Over the primary's socket, where initdb's pg_hba trusts replication.
        self._run(
            "pg_basebackup",
            "-D",
            str(standby.datadir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            str(self.socketdir),
            "-p",
            str(self.port),
            "-U",
            self.user,
            "--no-sync",
        )
        standby.start()
        return standby

    def base_backup(self) -> Path:
        """Return a physical copy of the running server (pg_basebackup), not started."""
        target = self.root / f"backup-{time.monotonic_ns()}"
        self._run(
            "pg_basebackup",
            "-D",
            str(target),
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            str(self.socketdir),
            "-p",
            str(self.port),
            "-U",
            self.user,
            "--no-sync",
        )
        return target

    def restore(self, backup: Path) -> None:
        """Stop the server, put the older copy backup in place of its data, start it again."""
        self.stop("immediate")
        shutil.rmtree(self.datadir)
        shutil.copytree(backup, self.datadir, symlinks=True)
        if self.os_user:
            for path in [self.datadir, *self.datadir.rglob("*")]:
                shutil.chown(path, self.os_user)
        self.start()

    def promote(self) -> None:
        """pg_ctl promote: a standby becomes a primary that takes writes."""
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60", "promote")

    def in_recovery(self) -> bool:
        """Return True while the server is a standby."""
        import psycopg2

        conn = psycopg2.connect(**self.connect_kwargs(), connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_is_in_recovery()")
                return bool(cursor.fetchone()[0])
        finally:
            conn.close()

    def add_role(self, name: str, password: str, database: str) -> None:
        """Create a login role with a password (scram-sha-256) that owns nothing but may use
        database."""
        import psycopg2

        conn = psycopg2.connect(**self.connect_kwargs(), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SET password_encryption = 'scram-sha-256'")
                cursor.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', [password])
                cursor.execute(f'GRANT ALL ON DATABASE "{database}" TO "{name}"')
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        """CREATE DATABASE name on this server."""
        import psycopg2

        conn = psycopg2.connect(**self.connect_kwargs())
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def connect_kwargs(self, dbname: str = "postgres") -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": dbname,
        }

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
