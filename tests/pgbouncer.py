"""A throwaway PgBouncer (Debian's pgbouncer) in front of a test PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2

from tests.pgserver import PostgresServer, free_port

INSTALL_HINT = (
    "PgBouncer was not found: install it with `apt-get install -y pgbouncer` "
    "(scripts/test does when it runs as root) or set KINDLER_PGBOUNCER to its path."
)


def find_pgbouncer() -> str | None:
    """Return the pgbouncer executable, or None when it is not installed."""
    for candidate in (os.environ.get("KINDLER_PGBOUNCER", ""), "/usr/sbin/pgbouncer"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("pgbouncer")


class PgBouncer:
    """pgbouncer on a free port, pooling every database of server in the given mode."""

    def __init__(
        self,
        server: PostgresServer,
        mode: str = "transaction",
        pool_size: int = 4,
        timeouts_ms: tuple[int, int] = (2000, 1000),
        template: str | None = None,
    ) -> None:
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.binary = binary
        self.server = server
        self.mode = mode
        self.pool_size = pool_size
        # The statement and lock timeouts every server connection starts with.
        self.timeouts_ms = timeouts_ms
        # Another pgbouncer.ini (compose/pgbouncer.ini), pointed at this server and port.
        self.template = template
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="kindler-pgbouncer-"))
        # PgBouncer refuses to run as root, as PostgreSQL does.
        self.os_user = server.os_user
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def config(self) -> str:
        """Return pgbouncer.ini."""
        if self.template is not None:
            return self._from_template(self.template)
        return "\n".join(
            [
                "[databases]",
                f"* = host={self.server.host} port={self.server.port} "
                f"connect_query='SET statement_timeout = {self.timeouts_ms[0]}; "
                f"SET lock_timeout = {self.timeouts_ms[1]}'",
                "[pgbouncer]",
                f"listen_addr = {self.host}",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = scram-sha-256",
                f"auth_file = {self.root / 'userlist.txt'}",
                f"admin_users = {self.server.user}",
                f"pool_mode = {self.mode}",
                f"default_pool_size = {self.pool_size}",
                "max_client_conn = 500",
                # Kindler sends its statement and lock timeouts as startup
                # options, which PgBouncer cannot pass on: connect_query sets
                # them instead (docs/pooling.md).
                "ignore_startup_parameters = options,extra_float_digits",
                "server_connect_timeout = 2",
                "server_login_retry = 1",
                f"logfile = {self.root / 'pgbouncer.log'}",
                f"pidfile = {self.root / 'pgbouncer.pid'}",
                "",
            ]
        )

    def _from_template(self, text: str) -> str:
        lines = []
        for line in text.splitlines():
            name = line.split("=", 1)[0].strip()
            if name == "*":
                line = line.replace(
                    "host=haproxy port=5432", f"host={self.server.host} port={self.server.port}"
                )
            elif name == "listen_addr":
                line = f"listen_addr = {self.host}"
            elif name == "listen_port":
                line = f"listen_port = {self.port}"
            elif name == "auth_file":
                line = f"auth_file = {self.root / 'userlist.txt'}"
            lines.append(line)
        lines += [
            f"admin_users = {self.server.user}",
            f"logfile = {self.root / 'pgbouncer.log'}",
            f"pidfile = {self.root / 'pgbouncer.pid'}",
            "",
        ]
        return "\n".join(lines)

    def start(self) -> None:
        """Start pgbouncer and wait until it accepts connections."""
        (self.root / "pgbouncer.ini").write_text(self.config())
        (self.root / "userlist.txt").write_text(f'"{self.server.user}" "{self.server.password}"\n')
        if self.os_user:
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, self.os_user)
        self.process = subprocess.Popen(
            [self.binary, str(self.root / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.os_user,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()[-2000:]}")
            try:
                self.admin("SHOW VERSION")
                return
            except psycopg2.Error:
                time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not start: {self.log()[-2000:]}")

    def admin(self, command: str) -> list[tuple[object, ...]]:
        """Run a command on PgBouncer's admin console and return its rows."""
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname="pgbouncer",
            user=self.server.user,
            password=self.server.password,
            connect_timeout=2,
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(command)
                return cursor.fetchall() if cursor.description else []
        finally:
            conn.close()

    def server_connections(self, database: str) -> int:
        """Return how many server connections PgBouncer holds for database now."""
        rows = self.admin("SHOW SERVERS")
        # The columns: type, user, database, state, ...
        return sum(1 for row in rows if row[2] == database)

    def log(self) -> str:
        try:
            return (self.root / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
