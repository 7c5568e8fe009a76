"""A real Patroni cluster for tests: etcd, PostgreSQL nodes under Patroni, HAProxy in front.

Debian's packages (`etcd` from etcd-server, `patroni`, `haproxy`), every
port free and on loopback, PostgreSQL run as the `postgres` OS user when
the tests run as root (as tests/pgserver.py does). HAProxy gets the checks
of compose/haproxy-patroni.cfg: `GET /primary` on each node's REST port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from bench.services import haproxy_sections
from tests.pgserver import PostgresServer, find_bindir, free_ports

ROOT = Path(__file__).resolve().parent.parent
SCOPE = "kindler"
DATABASE = "kindler"
REPLICATION_PASSWORD = "kindler-test-replication"


def binaries_missing() -> list[str]:
    """Return the programs this harness needs that are not installed."""
    wanted = {"etcd": "etcd-server", "patroni": "patroni", "haproxy": "haproxy"}
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin") for name in wanted}
    return [package for name, package in wanted.items() if not found[name]]


def wait_until(check: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, psycopg2.Error, ValueError):
            result = check()
            if result:
                return result
        time.sleep(0.1)
    raise AssertionError(message)


def http(method: str, url: str, body: Any = None, timeout: float = 5) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            raw = answer.read()
            status = answer.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class Etcd:
    """One etcd member on loopback, its data in root."""

    root: Path
    client_port: int
    peer_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://{self.endpoint}"
        with (self.root / "etcd.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    shutil.which("etcd") or "/usr/bin/etcd",
                    "--name=etcd1",
                    f"--data-dir={self.root / 'etcd'}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=etcd1={peer}",
                    "--initial-cluster-state=new",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_until(lambda: http("GET", f"{client}/health")[0] == 200, 30, "etcd did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Node:
    """PostgreSQL under one Patroni process."""

    name: str
    root: Path
    pg_port: int
    rest_port: int
    os_user: str | None
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / f"{self.name}.yml"

    @property
    def datadir(self) -> Path:
        return self.root / self.name / "data"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def write_config(self, etcd: Etcd, settings: dict[str, Any]) -> None:
        sockets = self.root / self.name / "sock"
        sockets.mkdir(parents=True, exist_ok=True)
        password = PostgresServer.password
        config = {
            "scope": SCOPE,
            "name": self.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{self.rest_port}",
                "connect_address": f"127.0.0.1:{self.rest_port}",
            },
            "etcd3": {"hosts": [etcd.endpoint]},
            "bootstrap": {
                "dcs": {
                    "ttl": 20,
                    "loop_wait": 1,
                    "retry_timeout": 5,
                    # compose/ keeps Patroni's 1 MB. Here the replica must take
                    # over however far behind the paused WAL senders left it
                    # (under load, past 1 MB): that lossy failover is under test.
                    "maximum_lag_on_failover": 1 << 30,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "max_connections": 200,
                            **settings,
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth-local": "trust"}],
                "pg_hba": [
                    "local all all trust",
                    "local replication all trust",
                    "host replication replicator 127.0.0.1/32 scram-sha-256",
                    "host all all 127.0.0.1/32 scram-sha-256",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg_port}",
                "connect_address": f"127.0.0.1:{self.pg_port}",
                "data_dir": str(self.datadir),
                "bin_dir": str(find_bindir()),
                "pgpass": str(self.root / self.name / "pgpass"),
                # A replica's copy starts at once, not after a spread checkpoint.
                "basebackup": [{"checkpoint": "fast"}],
                "authentication": {
                    "superuser": {"username": PostgresServer.user, "password": password},
                    "replication": {"username": "replicator", "password": REPLICATION_PASSWORD},
                    "rewind": {"username": PostgresServer.user, "password": password},
                },
                "parameters": {"unix_socket_directories": str(sockets)},
            },
        }
        # JSON is YAML: no YAML writer needed.
        self.config.write_text(json.dumps(config, indent=2))
        if self.os_user:
            for path in [self.root / self.name, sockets, self.config]:
                shutil.chown(path, self.os_user)

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
        }
        with (self.root / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [shutil.which("patroni") or "/usr/bin/patroni", str(self.config)],
                env=env,
                cwd=self.root,
                stdout=log,
                stderr=log,
                user=self.os_user,
                start_new_session=True,
            )

    def role(self) -> str | None:
        """Return Patroni's answer for this node's role, or None when its REST API is down."""
        try:
            status, body = http("GET", f"{self.rest}/patroni", timeout=2)
        except OSError:
            return None
        return str(body.get("role")) if status in (200, 503) and isinstance(body, dict) else None

    def is_primary(self) -> bool:
        try:
            return http("GET", f"{self.rest}/primary", timeout=2)[0] == 200
        except OSError:
            return False

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None

    def postgres_pids(self) -> list[int]:
        """Return the postmaster and its children."""
        postmaster = self.postmaster_pid()
        if postmaster is None:
            return []
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children")
        try:
            return [postmaster, *(int(pid) for pid in children.read_text().split())]
        except FileNotFoundError:
            return [postmaster]

    def walsender_pids(self) -> list[int]:
        """Return the pids of this node's WAL senders (it streams to the replicas)."""
        conn = psycopg2.connect(**self.connect_kwargs(), connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pid FROM pg_stat_replication")
                return [int(pid) for (pid,) in cursor.fetchall()]
        finally:
            conn.close()

    def kill(self) -> None:
        """kill -9 Patroni and its PostgreSQL, as a lost machine would go."""
        pids = self.postgres_pids()
        if self.process is not None and self.process.poll() is None:
            pids.append(self.process.pid)
        # No SIGCONT first: a paused WAL sender must not ship what it holds back.
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM Patroni, which stops its PostgreSQL; kill both if that takes too long."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def connect_kwargs(self, dbname: str = "postgres") -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.pg_port,
            "user": PostgresServer.user,
            "password": PostgresServer.password,
            "dbname": dbname,
        }


def haproxy_patroni_config(root: Path, listen: int, nodes: list[Node]) -> tuple[Path, Path]:
    """Write compose/haproxy-patroni.cfg's proxy for loopback nodes; return (config, socket)."""
    sections = haproxy_sections(ROOT / "compose" / "haproxy-patroni.cfg")
    admin = root / "haproxy.sock"
    out = ["global", f"    stats socket {admin} mode 600 level admin", "    maxconn 1024"]
    for name in ("defaults", "listen postgres-primary"):
        out.append(name)
        servers_written = False
        for line in sections[name]:
            if line.startswith("log "):
                continue
            if line.startswith("bind "):
                line = f"bind 127.0.0.1:{listen}"
            elif line.startswith("server "):
                # The example's servers, checks included, pointed at these nodes.
                if servers_written:
                    continue
                servers_written = True
                for node in nodes:
                    out.append(
                        f"    server {node.name} 127.0.0.1:{node.pg_port} "
                        f"check port {node.rest_port}"
                    )
                continue
            out.append(f"    {line}")
    config = root / "haproxy.cfg"
    config.write_text("\n".join(out) + "\n")
    return config, admin


@dataclass
class PatroniCluster:
    """etcd, `size` Patroni nodes and HAProxy; Kindler connects to haproxy_port."""

    size: int = 2
    settings: dict[str, Any] = field(default_factory=dict)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kindler-patroni-")))
    nodes: list[Node] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        ports = free_ports(3 + 2 * self.size)
        self.os_user = "postgres" if os.geteuid() == 0 else None
        if self.os_user:
            shutil.chown(self.root, self.os_user)
        self.etcd = Etcd(self.root, ports[0], ports[1])
        self.haproxy_port = ports[2]
        for index in range(self.size):
            pg, rest = ports[3 + 2 * index], ports[4 + 2 * index]
            self.nodes.append(Node(f"pg{index + 1}", self.root, pg, rest, self.os_user))

    def start(self) -> None:
        self.etcd.start()
        for node in self.nodes:
            node.write_config(self.etcd, self.settings)
        # The first node bootstraps alone, so it is the leader; the others clone it.
        self.nodes[0].start()
        wait_until(self.nodes[0].is_primary, 90, "the first Patroni node never led")
        self.create_database()
        for node in self.nodes[1:]:
            node.start()
        self.wait_for_replicas()
        self.start_haproxy()

    def create_database(self) -> None:
        conn = psycopg2.connect(**self.nodes[0].connect_kwargs(), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            conn.close()

    def members(self) -> list[dict[str, Any]]:
        for node in self.nodes:
            with contextlib.suppress(OSError):
                status, body = http("GET", f"{node.rest}/cluster", timeout=2)
                if status == 200 and isinstance(body, dict):
                    return list(body.get("members", []))
        return []

    def wait_for_replicas(self, timeout: float = 40) -> None:
        """Wait until every node runs: one leader, the others streaming from it."""

        def streaming() -> bool:
            members = self.members()
            # Patroni 3.0 says "running" for a streaming replica, later ones "streaming".
            roles = sorted(
                (str(m.get("role")), m.get("state") in ("running", "streaming"), m.get("lag", 0))
                for m in members
            )
            wanted = [("leader", True, 0)] + [("replica", True, 0)] * (self.size - 1)
            return roles == sorted(wanted)

        wait_until(streaming, timeout, f"Patroni members never all ran: {self.members()}")

    def leader(self) -> Node:
        return wait_until(
            lambda: next((node for node in self.nodes if node.is_primary()), None),
            120,
            "no Patroni node became the leader",
        )

    def replica(self) -> Node:
        leader = self.leader()
        return next(node for node in self.nodes if node is not leader)

    def start_haproxy(self) -> None:
        config, admin = haproxy_patroni_config(self.root, self.haproxy_port, self.nodes)
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        log = (self.root / "haproxy.log").open("ab")
        self.haproxy = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=log, stderr=log, start_new_session=True
        )
        wait_until(admin.exists, 10, "haproxy did not open its runtime socket")
        # HAProxy sends nothing to a server until its checks found it up:
        # Kindler's migrate, the first thing a test runs, must find the leader.
        wait_until(self.writable_through_haproxy, 60, "haproxy never reached the leader")

    def writable_through_haproxy(self) -> bool:
        kwargs = {**self.nodes[0].connect_kwargs(DATABASE), "port": self.haproxy_port}
        conn = psycopg2.connect(**kwargs, connect_timeout=2)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT NOT pg_is_in_recovery()")
                row = cursor.fetchone()
            return bool(row and row[0])
        finally:
            conn.close()

    def switchover(self, leader: Node, candidate: Node) -> None:
        status, body = http(
            "POST",
            f"{leader.rest}/switchover",
            {"leader": leader.name, "candidate": candidate.name},
            timeout=60,
        )
        assert status == 200, body

    def restart_postgres(self, node: Node) -> None:
        """Ask Patroni to restart the node's PostgreSQL (`patronictl restart`)."""
        status, body = http("POST", f"{node.rest}/restart", {}, timeout=60)
        assert status == 200, body

    def names_on(self, node: Node) -> set[str]:
        conn = psycopg2.connect(**node.connect_kwargs(DATABASE), connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT name FROM clusters_cluster")
                return {row[0] for row in cursor.fetchall()}
        finally:
            conn.close()

    def destroy(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.kill()
            self.haproxy.wait()
        for node in self.nodes:
            node.kill()
        self.etcd.kill()
        shutil.rmtree(self.root, ignore_errors=True)
