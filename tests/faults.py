"""Faults short of an outage, for a PostgresServer and a SQLite file the tests own.

Each fault is an object with inject() and recover(); recover() undoes
whatever inject() managed to do, so a caller can always run it in a finally.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from tests.pgserver import PostgresServer

FILLER_ROLE = "kindler_filler"


def admin_connection(pg: PostgresServer, dbname: str = "postgres") -> Any:
    """Return an autocommit superuser connection that writes even while the server is read-only."""
    conn = psycopg2.connect(
        **pg.connect_kwargs(dbname),
        connect_timeout=5,
        options="-c default_transaction_read_only=off",
    )
    conn.autocommit = True
    return conn


def execute(pg: PostgresServer, *statements: str, dbname: str = "postgres") -> None:
    """Run statements, each in its own transaction, as the superuser."""
    conn = admin_connection(pg, dbname)
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        conn.close()


class ReadOnlyServer:
    """default_transaction_read_only for the whole server, as a demoted primary or full disk.

    Set with ALTER SYSTEM and a reload: sessions already open stay open and
    see it from their next transaction, so Kindler's kept connections meet
    it as "cannot execute UPDATE in a read-only transaction" on the next write.
    """

    def __init__(self, pg: PostgresServer) -> None:
        self.pg = pg

    def inject(self) -> None:
        execute(
            self.pg,
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        )

    def recover(self) -> None:
        execute(
            self.pg, "ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()"
        )


class BackendKiller:
    """End every backend of Kindler's (requests, probes, replay) every few tenths of a second."""

    def __init__(self, pg: PostgresServer, every: float) -> None:
        self.pg, self.every = pg, every
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="backend-killer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(psycopg2.Error):
                execute(
                    self.pg,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'kindler%' AND pid <> pg_backend_pid()",
                )
                self.rounds += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class HeldLock:
    """One transaction that takes a lock with sql (FOR UPDATE, LOCK TABLE) and holds it."""

    def __init__(self, pg: PostgresServer, dbname: str, sql: str, params: Any = None) -> None:
        self.pg, self.dbname, self.sql, self.params = pg, dbname, sql, params
        self.conn: Any = None
        self.rows = 0

    def inject(self) -> None:
        self.conn = psycopg2.connect(**self.pg.connect_kwargs(self.dbname), connect_timeout=5)
        with self.conn.cursor() as cursor:
            cursor.execute(self.sql, self.params)
            self.rows = cursor.rowcount

    def recover(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self.conn.rollback()
            self.conn.close()
            self.conn = None


class SlotFiller:
    """Take every connection slot, then keep taking each one that frees up.

    First as a role without superuser (it stops at the slots reserved for
    superusers), then as the superuser for the reserved ones: Kindler runs as
    the superuser here, so only a server with no slot left at all refuses it,
    as a server full of another application's connections refuses a role
    that is not one.
    """

    def __init__(self, pg: PostgresServer, dbname: str) -> None:
        self.pg, self.dbname = pg, dbname
        self.conns: list[Any] = []
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.by_role: dict[str, int] = {}

    def _connect(self, user: str, password: str) -> bool:
        try:
            conn = psycopg2.connect(
                host=str(self.pg.socketdir),
                port=self.pg.port,
                user=user,
                password=password,
                dbname=self.dbname,
                connect_timeout=2,
                application_name="slot-filler",
            )
        except psycopg2.OperationalError:
            return False
        with self.lock:
            self.conns.append(conn)
            self.by_role[user] = self.by_role.get(user, 0) + 1
        return True

    def inject(self) -> None:
        conn = admin_connection(self.pg, self.dbname)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [FILLER_ROLE])
                if cursor.fetchone() is None:
                    cursor.execute(
                        f"CREATE ROLE {FILLER_ROLE} LOGIN NOSUPERUSER PASSWORD %s",
                        [self.pg.password],
                    )
        finally:
            conn.close()
        while self._connect(FILLER_ROLE, self.pg.password):
            pass
        while self._connect(self.pg.user, self.pg.password):
            pass
        self.thread = threading.Thread(target=self._keep_full, daemon=True)
        self.thread.start()

    def _keep_full(self) -> None:
        while not self.stop_event.wait(0.1):
            while self._connect(self.pg.user, self.pg.password):
                pass

    def held(self) -> int:
        with self.lock:
            return len(self.conns)

    def recover(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            conn.close()


class EmptyDatabase:
    """Put an empty database where Kindler's was (as a new, unmigrated server), then back.

    The original is renamed aside, not dropped, so recover() brings back
    exactly what Kindler had acknowledged.
    """

    def __init__(self, pg: PostgresServer, dbname: str) -> None:
        self.pg, self.dbname = pg, dbname
        self.saved = f"{dbname}_saved"

    def _evict(self, cursor: Any, dbname: str) -> None:
        # Refuse new sessions first, or Kindler reconnects between the two steps.
        cursor.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )

    def _retry(self, cursor: Any, sql: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                cursor.execute(sql)
                return
            except psycopg2.errors.ObjectInUse:
                # A terminated backend takes a moment to leave.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def inject(self) -> None:
        conn = admin_connection(self.pg)
        try:
            with conn.cursor() as cursor:
                self._evict(cursor, self.dbname)
                self._retry(cursor, f'ALTER DATABASE "{self.dbname}" RENAME TO "{self.saved}"')
                cursor.execute(f'CREATE DATABASE "{self.dbname}" OWNER "{self.pg.user}"')
        finally:
            conn.close()

    def recover(self) -> None:
        conn = admin_connection(self.pg)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT datname FROM pg_database")
                names = {row[0] for row in cursor.fetchall()}
                if self.saved not in names:
                    return
                if self.dbname in names:
                    self._evict(cursor, self.dbname)
                    self._retry(cursor, f'DROP DATABASE "{self.dbname}"')
                self._retry(cursor, f'ALTER DATABASE "{self.saved}" RENAME TO "{self.dbname}"')
                cursor.execute(f'ALTER DATABASE "{self.dbname}" WITH ALLOW_CONNECTIONS true')
        finally:
            conn.close()


class SqliteLock:
    """Hold SQLite's write lock from another program (BEGIN EXCLUSIVE)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def inject(self) -> None:
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")

    def recover(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


def checkpoint(path: Path) -> None:
    """Empty SQLite's write-ahead log into the file and truncate it, as SQLite itself does.

    A log already as long as it needs to be lets writes reuse its blocks,
    so a full disk would only show once it has to grow.
    """
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        deadline = time.monotonic() + 5
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        conn.close()


class SmallDisk:
    """A small filesystem of its own for a folder (root only), that fill() makes full.

    ext4 on a loop device when the host has one, else tmpfs: tmpfs lets a
    descriptor opened before chattr +i keep writing, ext4 refuses it as most
    disks would, so only ext4 shows a read-only file to a process that holds
    it open.
    """

    def __init__(self, folder: Path, image: Path, size_mb: int = 128) -> None:
        self.folder, self.image, self.size_mb = folder, image, size_mb
        self.filler = folder / "filler"
        self.kind: str | None = None

    @property
    def mounted(self) -> bool:
        return self.kind is not None

    @staticmethod
    def unavailable() -> str | None:
        """Return why no filesystem can be mounted here, or None when one can."""
        if os.geteuid() != 0:
            return "mounting a small filesystem needs root"
        return None

    def mount(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if shutil.which("mkfs.ext4") and Path("/dev/loop-control").exists():
            with self.image.open("wb") as handle:
                handle.truncate(self.size_mb << 20)
            made = subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)], capture_output=True
            )
            mounted = made.returncode == 0 and (
                subprocess.run(
                    ["mount", "-o", "loop", str(self.image), str(self.folder)],
                    capture_output=True,
                ).returncode
                == 0
            )
            if mounted:
                self.kind = "ext4"
                return
            self.image.unlink(missing_ok=True)
        options = f"size={self.size_mb}m,mode=0755"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.folder)],
            check=True,
            capture_output=True,
        )
        self.kind = "tmpfs"

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.folder)], check=False, capture_output=True)
            self.kind = None
            self.image.unlink(missing_ok=True)

    def fill(self) -> int:
        """Write a filler file until the disk is full; return its size."""
        chunk = b"\0" * (1 << 20)
        written = 0
        with open(self.filler, "wb", buffering=0) as handle:
            while chunk:
                try:
                    written += handle.write(chunk)
                    os.fsync(handle.fileno())
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk = chunk[: len(chunk) // 2]
        return written

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)


class FullTablespace:
    """A database's tables and indexes on a small filesystem of their own, then filled (root only).

    As when PostgreSQL's disk is full: a write that needs a new page fails
    with SQLSTATE 53100 (No space left on device), a write that fits the
    page it changes still succeeds, and the server runs on (its WAL is on
    another disk). inject() moves every relation of the database there, one
    at a time with a short lock_timeout so that requests never queue long
    behind the move, sends temporary tables there too (temp_tablespaces, so
    Kindler's probe meets the full disk), and fills the disk; recover()
    frees it; restore() moves everything back and drops the tablespace, so
    that a later pg_basebackup meets none.
    """

    NAME = "kindler_small"

    def __init__(self, pg: PostgresServer, dbname: str) -> None:
        self.pg, self.dbname = pg, dbname
        # A folder of its own: the server's OS user must reach it.
        self.work = Path(tempfile.mkdtemp(prefix="kindler-tablespace-"))
        self.work.chmod(0o755)
        self.disk = SmallDisk(self.work / "disk", self.work / "disk.img")
        self.moved = 0

    def inject(self) -> None:
        conn = admin_connection(self.pg, self.dbname)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_database_size(current_database())")
                size_mb = int(cursor.fetchone()[0]) >> 20
        finally:
            conn.close()
        # Room for the relations and what the load adds to them afterwards.
        self.disk.size_mb = 2 * size_mb + 64
        self.disk.mount()
        self.disk.folder.chmod(0o755)
        space = self.disk.folder / "pg"
        space.mkdir()
        if self.pg.os_user:
            shutil.chown(space, self.pg.os_user)
        execute(
            self.pg,
            f"CREATE TABLESPACE {self.NAME} LOCATION '{space}'",
            f"ALTER SYSTEM SET temp_tablespaces = '{self.NAME}'",
            "SELECT pg_reload_conf()",
        )
        self.moved = self._move("pg_default", self.NAME)
        self.disk.fill()

    def recover(self) -> None:
        self.disk.unfill()

    def restore(self) -> None:
        if not self.disk.mounted:
            return
        self.disk.unfill()
        self._move(self.NAME, "pg_default")
        execute(self.pg, "ALTER SYSTEM RESET temp_tablespaces", "SELECT pg_reload_conf()")
        # A session's temporary files may outlive the reload for a moment.
        deadline = time.monotonic() + 10
        while True:
            try:
                execute(self.pg, f"DROP TABLESPACE {self.NAME}", "CHECKPOINT")
                break
            except psycopg2.errors.ObjectNotInPrerequisiteState:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.remove()

    def remove(self) -> None:
        """Unmount the filesystem and remove its folder (after restore, or with the server gone)."""
        self.disk.unmount()
        shutil.rmtree(self.work, ignore_errors=True)

    def _move(self, source: str, target: str) -> int:
        """Move the database's tables, then its indexes, from source to target; return how many."""
        conn = admin_connection(self.pg, self.dbname)
        moved = 0
        try:
            with conn.cursor() as cursor:
                cursor.execute("SET lock_timeout = '100ms'")
                cursor.execute(
                    "SELECT c.relkind, format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace "
                    "WHERE c.relkind IN ('r', 'i') "
                    "AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' "
                    "AND coalesce(t.spcname, 'pg_default') = %s ORDER BY c.relkind DESC, 2",
                    [source],
                )
                for kind, name in cursor.fetchall():
                    statement = "TABLE" if kind == "r" else "INDEX"
                    while True:
                        try:
                            cursor.execute(f"ALTER {statement} {name} SET TABLESPACE {target}")
                            break
                        except psycopg2.errors.LockNotAvailable:
                            time.sleep(0.05)
                    moved += 1
        finally:
            conn.close()
        return moved


class Immutable:
    """chattr +i on files (root only): not even root can write them until chattr -i."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.changed: list[Path] = []

    @staticmethod
    def unavailable() -> str | None:
        """Return why chattr +i cannot be used here, or None when it can."""
        if os.geteuid() != 0:
            return "chattr +i needs root (CAP_LINUX_IMMUTABLE)"
        if not Path("/usr/bin/chattr").exists() and not Path("/bin/chattr").exists():
            return "chattr is not installed (e2fsprogs)"
        return None

    def inject(self) -> None:
        for path in self.paths:
            if path.exists():
                subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
                self.changed.append(path)

    def recover(self) -> None:
        for path in self.changed:
            subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)
        self.changed = []


class Flapping:
    """Stop and start PostgreSQL over and over in a thread, every period seconds or so."""

    def __init__(self, pg: PostgresServer, period: tuple[float, float] = (2.0, 3.0)) -> None:
        self.pg, self.period = pg, period
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.cycles = 0

    def inject(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        low, high = self.period
        step = 0
        while not self.stop_event.is_set():
            # Alternate the two ends of the period: deterministic, still uneven.
            self.stop_event.wait(low if step % 2 else high)
            if self.stop_event.is_set():
                return
            if step % 2 == 0:
                self.pg.stop("fast")
            else:
                self.pg.start()
                self.cycles += 1
            step += 1

    def recover(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=120)
        self.pg.ensure_running()


def client(pg: PostgresServer, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of the server's client programs (pg_dump, pg_restore) over its socket."""
    return subprocess.run(
        [str(pg.bindir / tool), "-h", str(pg.socketdir), "-p", str(pg.port), "-U", pg.user, *args],
        check=True,
        capture_output=True,
        text=True,
        user=pg.os_user,
        timeout=120,
    )


class ReplacedDatabase(EmptyDatabase):
    """Drop Kindler's database for good and create another in its place: nothing to put back."""

    def names(self) -> set[str]:
        """Return the cluster names the database holds now."""
        conn = admin_connection(self.pg, self.dbname)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT name FROM clusters_cluster")
                return {row[0] for row in cursor.fetchall()}
        finally:
            conn.close()

    def replace(self) -> None:
        """Drop the database and create an empty one with the same name (a new OID)."""
        conn = admin_connection(self.pg)
        try:
            with conn.cursor() as cursor:
                self._evict(cursor, self.dbname)
                self._retry(cursor, f'DROP DATABASE "{self.dbname}"')
                cursor.execute(f'CREATE DATABASE "{self.dbname}" OWNER "{self.pg.user}"')
        finally:
            conn.close()


class RestoredBackup(ReplacedDatabase):
    """A `pg_dump -Fc` backup of the database, and its restore over a dropped database."""

    def __init__(self, pg: PostgresServer, dbname: str) -> None:
        super().__init__(pg, dbname)
        # The server's own folder: the postgres OS user can write it when run as root.
        self.path = pg.root / f"{dbname}.dump"

    def dump(self) -> None:
        client(self.pg, "pg_dump", "-Fc", "-f", str(self.path), self.dbname)

    def restore(self) -> None:
        """Drop the database, create it again and restore the backup into it."""
        self.replace()
        client(self.pg, "pg_restore", "--exit-on-error", "-d", self.dbname, str(self.path))


# Another process keeps the file open in WAL mode, as an instance's other
# workers do, so its -wal and -shm exist (and are made read-only with it).
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
for statement in sys.argv[2:]:
    conn.execute(statement)
print("open", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_open(database: Path, *statements: str) -> Iterator[None]:
    """Keep database open in WAL mode from another process, after running statements."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database), *statements],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        assert holder.stdout.readline() == "open\n"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


@contextlib.contextmanager
def read_only(database: Path) -> Iterator[None]:
    """Make a SQLite file, its -wal and -shm read-only: chattr +i as root, else chmod 0444."""
    paths = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    if os.geteuid() == 0 and Immutable.unavailable() is not None:
        # Permissions do not stop root.
        pytest.skip(str(Immutable.unavailable()))
    if Immutable.unavailable() is None:
        immutable = Immutable(paths)
        immutable.inject()
        try:
            yield
        finally:
            immutable.recover()
        return
    existing = [path for path in paths if path.exists()]
    for path in existing:
        path.chmod(0o444)
    try:
        yield
    finally:
        for path in existing:
            path.chmod(0o644)
