"""Break PostgreSQL, HAProxy, SQLite and Kindler itself under load; check every acknowledged write.

Run as `.venv/bin/python bench/chaos.py` (about 8 minutes) or with `--short`
(about 5 minutes; tests/test_chaos.py runs that, in slices of a few faults,
each with --only). It starts, all on loopback:
a throwaway PostgreSQL (tests/pgserver.py), Debian's haproxy with the
`defaults` and `listen postgres` sections of compose/haproxy.cfg in front of
it, and Kindler under granian (kindler.webserver, 2 workers) pointed at
HAProxy, its SQLite file on a small tmpfs of its own when run as root. A
bounded load generator (bench/workload.py) creates, changes (PATCH) and
deletes clusters and reads them through the API while the faults below happen
one after another, with recovery in between (tests/faults.py injects the ones
short of an outage).

For each fault it reports requests sent, acknowledged writes, acknowledged
writes missing or wrong in PostgreSQL at the end, 500s, conflicts the
instance made with itself, the longest request, and every other failure by
status; then whether the promise held: nothing acknowledged missing or wrong,
no 500, no self-conflict, every 503 with a JSON detail, no request longer than
the documented bound KINDLER_REQUEST_DEADLINE (set here to what
PG_CONNECT_TIMEOUT + PG_STATEMENT_TIMEOUT + 1 + SQLITE_BUSY_TIMEOUT make),
and for the first rows (outages with a healthy SQLite file) no failed read once the switch was seen.

"PostgreSQL disk full" (root only) moves Kindler's tables and indexes, and
its temporary tables, to a small filesystem, fills it, frees it after the
hold and moves them back; health's state_cause must name the full disk.

"10,000-write replay under load" journals 10,000 changes in an outage
from one process of the instance and times their replay beside the load,
with the requests' p99 meanwhile. "round trip 1.2 s" puts a proxy delaying
0.6 s each way (tests/tcpproxy.py) between HAProxy and PostgreSQL.

Two rows put another database in PostgreSQL's place while Kindler is cut
off: one restored with pg_restore from a pg_dump taken under load a few
seconds earlier, one empty and then migrated. They also report how many rows
Kindler wrote back into it (RestoredRow), and apart from "missing or wrong"
the acknowledged deletes the restore undid: clusters PostgreSQL had already
removed when it was cut off, which the backup brings back and which a copy
remembers deleting only when the mirror had copied the delete. A third row,
"restore after acknowledged deletes", takes a physical copy (pg_basebackup)
under load and puts it in place of the server's data a few seconds later,
the node, timeline and system identifier unchanged: every delete acknowledged
since must be made again (0 back), every create written back.

Two rows upgrade: "earlier instance on a newer schema, through an outage"
gives PostgreSQL a later release's schema (a column with a default, a
kindler_schema row this code lacks) and stops it; once it is back, Kindler
must refuse changes with the 503 that says to upgrade and keep its journal
until the row is gone (as for an upgraded instance), then replay it.
"upgraded in place with a journal" stops Kindler with a journal in an
outage, runs `migrate` and starts it again on the same SQLite file.

The last row gives PostgreSQL a synchronous streaming standby (pg_basebackup
-R), restarts Kindler with both servers in PG_HOST, kills the primary with -9
and promotes the standby with pg_ctl promote: every acknowledged write must be
on the new primary, and the note says how long after the promote (and after
the kill) writes landed there.

`--only NAME` (repeatable) runs only the faults whose name contains NAME.

`--patroni` runs, in place of all that, a Patroni cluster (tests/patroni.py:
etcd, two PostgreSQL nodes under Patroni with asynchronous replication,
HAProxy with compose/haproxy-patroni.cfg's checks) through a switchover, a
lost leader, a lost leader whose replica was behind (WAL senders paused 4 s),
etcd lost for 20 s and a PostgreSQL restart by Patroni. Each note says how
long until writes reached PostgreSQL again, and "written back" counts the
rows the new leader lacked that Kindler put back.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/api.py would stand in for the standard library's http package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import psycopg2  # noqa: E402

from bench._setup import kindler_environ  # noqa: E402
from bench.chaosreport import (  # noqa: E402
    HealthWatch,
    Phase,
    describe_conflict,
    markdown,
    phase_row,
)
from bench.services import (  # noqa: E402
    PYTHON,
    HAProxy,
    Kindler,
    Reconciler,
    haproxy_config,
    health,
)
from bench.workload import Load, check  # noqa: E402
from kindler.db.failover.schema import OLDER  # noqa: E402
from tests import faults  # noqa: E402
from tests.patroni import Node, PatroniCluster, binaries_missing, wait_until  # noqa: E402
from tests.pgserver import PostgresServer, free_ports  # noqa: E402
from tests.tcpproxy import TcpProxy  # noqa: E402

__all__ = ["haproxy_config", "main", "markdown"]

# The timeouts the run gives Kindler, and the request deadline that bounds
# them all together (see kindler/db/failover/middleware.py): connect, a
# statement plus the client's 1 s margin, then SQLite's write lock.
CONNECT_TIMEOUT, STATEMENT_TIMEOUT, LOCK_TIMEOUT, SQLITE_BUSY_TIMEOUT = 1.0, 2.0, 1.0, 2.0
BUDGET = CONNECT_TIMEOUT + STATEMENT_TIMEOUT + 1.0 + SQLITE_BUSY_TIMEOUT
RESTART = "Kindler restart in replay"
# Journaled in an outage by one process, then replayed with the load running.
JOURNALED = 10_000
LONG_REPLAY = f"{JOURNALED:,}-write replay under load"
KILL_EVERY = 0.5
# Each way: PostgreSQL "far away", a round trip of 1.2 s.
SLOW_DELAY = 0.6
RESTARTS = 5
PROMOTION = "primary killed, standby promoted"
RESTORED_IN_PLACE = "restore after acknowledged deletes"
EARLIER_ON_NEWER = "earlier instance on a newer schema, through an outage"
UPGRADED_IN_PLACE = "upgraded in place with a journal"


@dataclass
class Through:
    """PostgreSQL as Kindler reaches it through HAProxy: whichever Patroni node leads."""

    port: int

    def connect_kwargs(self, dbname: str = "postgres") -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": PostgresServer.user,
            "password": PostgresServer.password,
            "dbname": dbname,
        }


class WritesAgain:
    """Watch the Patroni nodes: when does a node that went down or was a replica take writes?

    A node counts once it was seen not leading (a replica, demoted, down) and
    then leading, and its clusters grew past the count it had when it began
    to lead: Kindler's writes reach PostgreSQL again.
    """

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.landed: tuple[str, float] | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self, node: Node) -> int | None:
        """Return the node's cluster count while it leads, None otherwise."""
        try:
            conn = psycopg2.connect(**node.connect_kwargs("kindler"), connect_timeout=1)
        except psycopg2.Error:
            return None
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT CASE WHEN NOT pg_is_in_recovery() "
                    "THEN (SELECT count(*) FROM clusters_cluster) END"
                )
                count = cursor.fetchone()[0]
                return None if count is None else int(count)
        except psycopg2.Error:
            return None
        finally:
            conn.close()

    def _run(self) -> None:
        away = dict.fromkeys((node.name for node in self.nodes), False)
        base: dict[str, int] = {}
        while not self.stop.is_set() and self.landed is None:
            for node in self.nodes:
                count = self._sample(node)
                if count is None:
                    away[node.name] = True
                    base.pop(node.name, None)
                elif away[node.name]:
                    if node.name not in base:
                        base[node.name] = count
                    elif count > base[node.name]:
                        self.landed = (node.name, time.monotonic())
            time.sleep(0.1)

    def since(self, start: float, timeout: float = 90) -> str:
        """Return where and how long after start writes landed again, waiting up to timeout."""
        self.thread.join(timeout)
        self.stop.set()
        if self.landed is None:
            return "writes never reached a new leader"
        name, at = self.landed
        return f"writes on PostgreSQL again ({name}) {at - start:.2f} s after"


@dataclass
class Fault:
    name: str
    inject: Callable[[], object]
    recover: Callable[[], object]
    hold: float
    # An outage with a healthy SQLite file: every read must succeed once
    # Kindler has switched (the first rows' promise).
    reads_kept: bool = False
    skipped: str | None = None
    note: Callable[[], str] | None = None
    # Runs once Kindler is back on PostgreSQL, before the phase ends.
    after: Callable[[], object] | None = None
    # The most switches of the instance's state the fault may cause.
    max_state_changes: int | None = None
    # What health's state_cause must name at the end of the hold.
    expected_cause: str | None = None


def _switch_cause(line: str) -> str:
    """Return one switch of the history as `source -> target: cause`."""
    try:
        entry = json.loads(line)
        return f"{entry.get('source')} -> {entry.get('target')}: {entry.get('cause')}"
    except ValueError:
        return line


def wait_for_primary(port: int, timeout: float) -> bool:
    """Wait until Kindler answers from PostgreSQL with an empty journal."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        database = health(port)
        sync = (database or {}).get("sync") or {}
        pending = (sync.get("journal") or {}).get("pending")
        ok = database is not None and database["state"] == "primary" and pending in (0, None)
        streak = streak + 1 if ok else 0
        if streak >= 5:
            return True
        time.sleep(0.1)
    return False


def wait_for_fallback(port: int, timeout: float) -> None:
    """Wait until Kindler serves from SQLite."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        database = health(port)
        if database is not None and database["active"] == "sqlite":
            return
        time.sleep(0.05)
    raise RuntimeError(f"Kindler did not switch to SQLite within {timeout:g} s")


class Chaos:
    def __init__(self, short: bool, only: list[str] | None = None, patroni: bool = False) -> None:
        self.short = short
        # Run the Patroni faults against a Patroni cluster instead of the others.
        self.patroni = patroni
        # Fault names (or parts of them) to run; None runs every fault.
        self.only = [name.lower() for name in only] if only else None
        self.hold = 3.0 if short else 10.0
        self.settle = 1.0 if short else 4.0
        self.workdir = Path(tempfile.mkdtemp(prefix="kindler-chaos-"))
        self.token = secrets.token_hex(16)
        self.phases: list[Phase] = []
        self.disk = faults.SmallDisk(self.workdir / "sqlite", self.workdir / "sqlite.img")
        self.full_disk: faults.FullTablespace | None = None
        self.reconciler: Reconciler | None = None
        self.phase: Phase | None = None

    def wanted(self, name: str) -> bool:
        return self.only is None or any(part in name.lower() for part in self.only)

    def setup(self) -> None:
        self.standby: PostgresServer | None = None
        # The server that takes writes: the standby once it is promoted.
        self.primary: PostgresServer | Through
        if self.patroni:
            self.cluster = PatroniCluster()
            self.cluster.start()
            self.haproxy_port, self.web_port = self.cluster.haproxy_port, free_ports(1)[0]
            self.primary = Through(self.haproxy_port)
        else:
            # fsync and synchronous commits on: a kill -9 must not drop an acknowledged
            # commit, or the count would blame Kindler for PostgreSQL's settings.
            self.pg = PostgresServer(durable=True)
            self.pg.init()
            self.pg.start()
            self.pg.create_database("kindler")
            self.primary = self.pg
            self.haproxy_port, self.web_port = free_ports(2)
            config, admin = haproxy_config(self.workdir, self.haproxy_port, self.pg.port)
            self.haproxy = HAProxy(config, admin, {**os.environ, "PG_USER": self.pg.user})
            self.haproxy.start()
        if self.disk.unavailable() is None:
            self.disk.mount()
        else:
            self.disk.folder.mkdir()
        self.sqlite = self.disk.folder / "kindler.db"
        self.env = kindler_environ()
        self.env.update(
            DJANGO_SETTINGS_MODULE="kindler.settings",
            PG_HOST="127.0.0.1",
            PG_PORT=str(self.haproxy_port),
            PG_DATABASE="kindler",
            PG_USER=PostgresServer.user,
            PG_PASSWORD=PostgresServer.password,
            PG_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
            PG_STATEMENT_TIMEOUT=str(STATEMENT_TIMEOUT),
            PG_LOCK_TIMEOUT=str(LOCK_TIMEOUT),
            PG_POOL_MAX="10",
            SQLITE_BUSY_TIMEOUT=str(SQLITE_BUSY_TIMEOUT),
            KINDLER_REQUEST_DEADLINE=str(BUDGET),
            SQLITE_PATH=str(self.sqlite),
            SECRET_KEY=secrets.token_urlsafe(50),
            KINDLER_API_TOKEN=self.token,
            KINDLER_HEALTH_INTERVAL="0.5",
            KINDLER_MIRROR_INTERVAL="1",
            KINDLER_WORKERS="2",
            KINDLER_BIND=f"127.0.0.1:{self.web_port}",
            KINDLER_ACCESS_LOG="/dev/null",
            KINDLER_FAKE_STATE=str(self.workdir / "fakes"),
            KINDLER_CHILD_ENV="KINDLER_FAKE_*",
            # The fake k3d the tests use: a create passes preflight, and the
            # reconciler "runs" clusters, without a real k3d.
            PATH=os.pathsep.join(
                [str(ROOT / "tests" / "fakes"), str(Path(PYTHON).parent), os.environ["PATH"]]
            ),
        )
        subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        self.kindler = Kindler(self.env, self.web_port, self.workdir / "kindler.log")
        self.kindler.start()

    def teardown(self) -> None:
        (HERE / "out").mkdir(exist_ok=True)
        for name in ("kindler.log", "reconcile.log"):
            if (self.workdir / name).exists():
                shutil.copy(self.workdir / name, HERE / "out" / f"chaos-{name}")
        steps: list[Callable[[], object]] = []
        if self.reconciler is not None:
            steps.append(self.reconciler.stop)
        if hasattr(self, "kindler"):
            steps.append(self.kindler.stop)
        if hasattr(self, "haproxy"):
            steps.append(self.haproxy.kill)
        if hasattr(self, "pg"):
            steps.append(self.pg.destroy)
        if self.full_disk is not None:
            steps.append(self.full_disk.remove)
        if self.standby is not None:
            steps.append(self.standby.destroy)
        if hasattr(self, "cluster"):
            steps.append(self.cluster.destroy)
        steps.append(self.disk.unmount)
        for stop in steps:
            try:
                stop()
            except Exception as exc:  # tear everything down regardless
                print(f"teardown: {exc}", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def conflict_mark(self) -> int:
        """Return the highest conflict id in PostgreSQL (0 when there is none yet)."""
        conn = psycopg2.connect(**self.primary.connect_kwargs("kindler"), connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT coalesce(max(id), 0) FROM kindler_db_conflict")
                return int(cursor.fetchone()[0])
        finally:
            conn.close()

    def outage_faults(self) -> list[Fault]:
        pause = 4.0 if self.short else 10.0
        return [
            Fault("kill -9", self.pg.kill, self.pg.ensure_running, self.hold, reads_kept=True),
            Fault(
                "pg_ctl stop -m fast",
                lambda: self.pg.stop("fast"),
                self.pg.start,
                self.hold,
                reads_kept=True,
            ),
            Fault(f"SIGSTOP {pause:g} s", self.pg.pause, self.pg.resume, pause, reads_kept=True),
            Fault(
                "haproxy disable",
                lambda: self.haproxy.command("disable server postgres/primary"),
                lambda: self.haproxy.command("enable server postgres/primary"),
                self.hold,
                reads_kept=True,
            ),
            Fault(
                "haproxy kill", self.haproxy.kill, self.haproxy.start, self.hold, reads_kept=True
            ),
        ]

    def long_replay_fault(self) -> Fault:
        """Journal JOURNALED writes in an outage, then time their replay beside the load."""
        clusters = JOURNALED // 4
        seen: dict[str, Any] = {}

        def journal() -> None:
            self.haproxy.command("disable server postgres/primary")
            wait_for_fallback(self.web_port, 15)
            with self.load.lock:
                # Ports the load will never ask for: no write of the load's is refused for them.
                first = self.load._ports(3 * clusters)
            if first is None:
                raise RuntimeError("the load has used up the port range")
            # One insert and three updates per cluster, each journaled as in an outage.
            code = (
                "from clusters.models import Cluster\n"
                "from kindler.db.failover.pinning import pinned_alias\n"
                "with pinned_alias('sqlite'):\n"
                f"    Cluster.objects.bulk_create([Cluster(name=f'journaled-{{i}}', "
                f"http_port={first} + 3 * i, https_port={first} + 3 * i + 1, "
                f"pf_port={first} + 3 * i + 2) for i in range({clusters})], batch_size=500)\n"
                "    for port in (30000, 30001, 30002):\n"
                "        Cluster.objects.filter(name__startswith='journaled-')"
                ".update(node_port=port)\n"
            )
            subprocess.run(
                [PYTHON, str(ROOT / "manage.py"), "shell", "-c", code],
                env=self.env,
                cwd=ROOT,
                check=True,
                capture_output=True,
                timeout=120,
            )
            seen["pending"] = self.journal_pending()

        def replay_timed() -> None:
            started = time.monotonic()
            self.haproxy.command("enable server postgres/primary")
            deadline = started + 120
            while time.monotonic() < deadline:
                database = health(self.web_port, self.token) or {}
                pending = ((database.get("sync") or {}).get("journal") or {}).get("pending")
                if database.get("state") == "primary" and pending == 0:
                    seen["seconds"] = time.monotonic() - started
                    break
                time.sleep(0.05)
            ended = started + seen.get("seconds", 120)
            during = sorted(c.latency for c in self.load.calls if started <= c.at < ended)
            seen["requests"] = len(during)
            seen["p99"] = during[int(len(during) * 0.99)] if during else 0.0

        def note() -> str:
            if "seconds" not in seen:
                return f"{seen.get('pending')} entries not replayed within 120 s"
            return (
                f"{seen['pending']} journal entries ({clusters:,} creates, 3 updates each) "
                f"back in PostgreSQL {seen['seconds']:.2f} s after it was (target 5 s); "
                f"{seen['requests']} requests during the replay, p99 {seen['p99']:.3f} s "
                "(target 0.5 s)"
            )

        return Fault(LONG_REPLAY, journal, replay_timed, 1.0, note=note, max_state_changes=4)

    def postgres_faults(self) -> list[Fault]:
        """Faults of a PostgreSQL that still answers: read-only, locks, full, unmigrated."""
        row_hold, table_hold = (5.0, 4.0) if self.short else (20.0, 15.0)
        short_hold = 4.0 if self.short else 10.0
        long_hold = 10.0 if self.short else 60.0
        read_only = faults.ReadOnlyServer(self.pg)
        full = self.full_disk = faults.FullTablespace(self.pg, "kindler")
        disk_hold = 10.0 if self.short else 30.0
        killer = faults.BackendKiller(self.pg, KILL_EVERY)
        row = faults.HeldLock(
            self.pg,
            "kindler",
            "SELECT id FROM clusters_cluster WHERE name = %s FOR UPDATE",
        )
        table = faults.HeldLock(
            self.pg, "kindler", "LOCK TABLE clusters_cluster IN ACCESS EXCLUSIVE MODE"
        )
        slots = faults.SlotFiller(self.pg, "kindler")
        empty = faults.EmptyDatabase(self.pg, "kindler")

        def lock_row() -> None:
            row.params = [self.load.make_hot(time.monotonic() - self.settle)]
            row.inject()

        def unlock_row() -> None:
            row.recover()
            self.load.hot = None

        link: dict[str, TcpProxy] = {}

        def slow_down() -> None:
            # HAProxy's server now goes through a proxy that delays each way;
            # the sessions it holds are cut so that no connection keeps the fast path.
            link["proxy"] = TcpProxy(self.pg.host, self.pg.port, delay=SLOW_DELAY)
            self.haproxy.command(
                f"set server postgres/primary addr 127.0.0.1 port {link['proxy'].port}"
            )
            self.haproxy.command("shutdown sessions server postgres/primary")

        def speed_up() -> None:
            self.haproxy.command(f"set server postgres/primary addr 127.0.0.1 port {self.pg.port}")
            self.haproxy.command("shutdown sessions server postgres/primary")
            link.pop("proxy").close()

        return [
            Fault(
                f"PostgreSQL read-only {long_hold:g} s",
                read_only.inject,
                read_only.recover,
                long_hold,
                note=lambda: (
                    "ALTER SYSTEM SET default_transaction_read_only = on; reload (a PostgreSQL "
                    "that cannot take writes, as with a full disk)"
                ),
                max_state_changes=4,
            ),
            Fault(
                f"PostgreSQL disk full {disk_hold:g} s",
                full.inject,
                full.recover,
                disk_hold,
                skipped=faults.SmallDisk.unavailable(),
                note=lambda: (
                    f"Kindler's {full.moved} tables and indexes, and temporary tables, moved to a "
                    f"{full.disk.size_mb} MiB {full.disk.kind or 'filesystem'} of their own, "
                    "filled, then freed; health said: "
                    f"{self.phase.state_cause if self.phase else None}"
                ),
                after=full.restore,
                max_state_changes=4,
                expected_cause="its disk is full",
            ),
            Fault(
                f"backends killed every {KILL_EVERY:g} s for {long_hold:g} s",
                killer.start,
                killer.stop,
                long_hold,
                note=lambda: f"pg_terminate_backend of Kindler's backends, {killer.rounds} rounds",
                max_state_changes=4,
            ),
            Fault(
                f"round trip {2 * SLOW_DELAY:g} s for {long_hold:g} s",
                slow_down,
                speed_up,
                long_hold,
                note=lambda: (
                    f"a proxy delaying {SLOW_DELAY:g} s each way between HAProxy and PostgreSQL; "
                    f"a probe that cannot finish within PG_CONNECT_TIMEOUT {CONNECT_TIMEOUT:g} s "
                    "counts as unreachable"
                ),
                max_state_changes=4,
            ),
            Fault(
                f"row locked {row_hold:g} s",
                lock_row,
                unlock_row,
                row_hold,
                note=lambda: (
                    f"SELECT ... FOR UPDATE on {(row.params or ['?'])[0]} "
                    f"({row.rows} row), which half the PATCHes target"
                ),
            ),
            Fault(
                f"table locked {table_hold:g} s",
                table.inject,
                table.recover,
                table_hold,
                note=lambda: "LOCK TABLE clusters_cluster IN ACCESS EXCLUSIVE MODE",
            ),
            Fault(
                "connection slots exhausted, pool on",
                slots.inject,
                slots.recover,
                short_hold,
                note=lambda: (
                    "held "
                    + ", ".join(f"{n} as {role}" for role, n in slots.by_role.items())
                    + " of max_connections, taking back every slot freed; Kindler's pool "
                    + f"PG_POOL_MAX {self.env['PG_POOL_MAX']} per process"
                ),
            ),
            Fault(
                "unmigrated PostgreSQL",
                empty.inject,
                empty.recover,
                short_hold,
                note=lambda: "kindler renamed aside, an empty kindler created; then put back",
            ),
        ]

    def restore_faults(self) -> list[Fault]:
        """PostgreSQL restored from an older backup, or replaced by an empty database.

        Both happen behind a disabled HAProxy (Kindler on SQLite meanwhile),
        as an operator restores or replaces a database Kindler is cut off from.
        """
        after_dump = 4.0 if self.short else 10.0
        hold = 3.0 if self.short else 10.0
        backup = faults.RestoredBackup(self.pg, "kindler")
        empty = faults.ReplacedDatabase(self.pg, "kindler")
        seen: dict[str, Any] = {}

        def cut() -> None:
            self.haproxy.command("disable server postgres/primary")
            wait_for_fallback(self.web_port, 15)
            seen["cut"] = time.monotonic()

        def link() -> None:
            seen["linked"] = datetime.now(UTC)
            self.haproxy.command("enable server postgres/primary")

        def dump_then_restore() -> None:
            seen.clear()
            backup.dump()
            seen["dumped"] = time.monotonic()
            time.sleep(after_dump)
            cut()
            kept = backup.names()
            backup.restore()
            assert self.phase is not None
            # Rows PostgreSQL no longer held when it was cut off, which the backup brings back.
            self.phase.back_after_restore = backup.names() - kept

        def replace_by_empty() -> None:
            seen.clear()
            cut()
            empty.replace()
            assert self.phase is not None
            # The new database numbers its conflicts from 1 again.
            self.phase.conflict_mark = 0

        def link_and_migrate() -> None:
            link()
            seen["migrate"] = self.migrate_postgres()

        def count_written_back() -> None:
            assert self.phase is not None
            if "linked" in seen:
                seen["why"] = self.written_back_since(seen["linked"])
                self.phase.written_back = sum(seen["why"].values())

        def acked_after_dump() -> int:
            start, stop = seen.get("dumped", 0.0), seen.get("cut", 0.0)
            calls = self.load.calls
            return sum(1 for c in calls if c.is_write and c.ok and start <= c.ended < stop)

        def written() -> str:
            why = seen.get("why") or {}
            return ", ".join(f"{n} {reason}" for reason, n in sorted(why.items())) or "none"

        def copy_then_restore() -> None:
            seen.clear()
            copy = self.pg.base_backup()
            seen["dumped"] = time.monotonic()
            time.sleep(after_dump)
            seen["cut"] = time.monotonic()
            seen["linked"] = datetime.now(UTC)
            self.pg.restore(copy)

        def deletes_after_copy() -> int:
            start, stop = seen.get("dumped", 0.0), seen.get("cut", 0.0)
            calls = self.load.calls
            return sum(1 for c in calls if c.kind == "delete" and c.ok and start <= c.ended < stop)

        return [
            Fault(
                "PostgreSQL restored from an older backup",
                dump_then_restore,
                link,
                hold,
                after=count_written_back,
                note=lambda: (
                    f"pg_dump -Fc under load, then {acked_after_dump()} writes acknowledged in "
                    f"{after_dump:g} s; HAProxy disabled, the database dropped and pg_restore'd "
                    f"from the dump; rows written back: {written()}"
                ),
            ),
            Fault(
                "PostgreSQL replaced by an empty database",
                replace_by_empty,
                link_and_migrate,
                hold,
                after=count_written_back,
                note=lambda: (
                    "HAProxy disabled, the database dropped and created empty; HAProxy enabled, "
                    f"then `manage.py migrate --database postgres` ({seen.get('migrate')}); "
                    f"rows written back: {written()}"
                ),
            ),
            Fault(
                RESTORED_IN_PLACE,
                copy_then_restore,
                lambda: None,
                hold,
                after=count_written_back,
                note=lambda: (
                    f"pg_basebackup under load, then {acked_after_dump()} writes acknowledged "
                    f"({deletes_after_copy()} deletes) in {after_dump:g} s; the server stopped "
                    "and the copy put in place of its data (same node, timeline and system "
                    f"identifier), HAProxy untouched; rows written back: {written()}"
                ),
            ),
        ]

    def patroni_faults(self) -> list[Fault]:
        """Faults of a Patroni cluster (two nodes, asynchronous replication) behind HAProxy."""
        cluster = self.cluster
        seen: dict[str, Any] = {}

        def watch() -> None:
            seen.clear()
            seen["start"], seen["since"] = time.monotonic(), datetime.now(UTC)
            seen["watch"] = WritesAgain(cluster.nodes)

        def switchover() -> None:
            watch()
            cluster.switchover(cluster.leader(), cluster.replica())

        def kill_leader(behind: bool) -> Callable[[], None]:
            def run() -> None:
                leader = cluster.leader()
                if behind:
                    # The replica falls behind, as under load or over a slow link.
                    for pid in leader.walsender_pids():
                        os.kill(pid, signal.SIGSTOP)
                    time.sleep(4.0)
                watch()
                seen["killed"] = leader
                leader.kill()

            return run

        def rejoin() -> None:
            killed = seen.get("killed")
            if killed is not None:
                wait_until(lambda: cluster.leader() is not killed, 90, "no new leader")
                killed.start()

        def lose_etcd() -> None:
            cluster.etcd.kill()

        def etcd_back() -> None:
            watch()
            cluster.etcd.start()

        def restart() -> None:
            watch()
            cluster.restart_postgres(cluster.leader())

        def settled() -> None:
            seen["note"] = seen["watch"].since(seen["start"])
            cluster.wait_for_replicas(timeout=120)
            if self.phase is not None:
                # What the new leader lacked and Kindler wrote back (failover, restored).
                self.phase.written_back = sum(self.written_back_since(seen["since"]).values())

        def note(event: str) -> Callable[[], str]:
            return lambda: f"{seen.get('note', 'not measured')} {event}"

        missing = binaries_missing()
        skipped = f"needs Debian's {', '.join(missing)}" if missing else None
        return [
            Fault(
                "Patroni switchover",
                switchover,
                lambda: None,
                self.hold,
                after=settled,
                note=note("the switchover was asked for"),
                skipped=skipped,
            ),
            Fault(
                "Patroni leader lost (kill -9)",
                kill_leader(behind=False),
                rejoin,
                self.hold,
                after=settled,
                note=note("the kill (Patroni's TTL 20 s)"),
                skipped=skipped,
            ),
            Fault(
                "Patroni leader lost, replica behind",
                kill_leader(behind=True),
                rejoin,
                self.hold,
                after=settled,
                note=note("the kill; the WAL senders were paused 4 s before it"),
                skipped=skipped,
            ),
            Fault(
                "etcd lost 20 s",
                lose_etcd,
                etcd_back,
                20.0,
                after=settled,
                note=note("etcd came back (the leader demotes itself without it)"),
                skipped=skipped,
            ),
            Fault(
                "PostgreSQL restarted by Patroni",
                restart,
                lambda: None,
                self.hold,
                after=settled,
                note=note("the restart was asked for"),
                skipped=skipped,
            ),
        ]

    def migrate_postgres(self) -> str:
        """Run `manage.py migrate --database postgres` as an operator would, once it connects."""
        command = [PYTHON, str(ROOT / "manage.py"), "migrate", "--database", "postgres"]
        deadline = time.monotonic() + 30
        while True:
            # HAProxy takes a server back only after its health checks pass.
            result = subprocess.run(
                [*command, "--no-input", "-v", "0"],
                env=self.env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if result.returncode == 0:
                return "exit status 0"
            if time.monotonic() > deadline:
                return f"exit status {result.returncode}: {result.stderr.strip()[-300:]}"
            time.sleep(0.5)

    def written_back_since(self, since: datetime) -> dict[str, int]:
        """Return how many rows Kindler wrote back into PostgreSQL since then, by why."""
        conn = psycopg2.connect(**self.primary.connect_kwargs("kindler"), connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT why, count(*) FROM kindler_db_restoredrow WHERE restored_at >= %s "
                    "GROUP BY why",
                    [since],
                )
                return {why: int(count) for why, count in cursor.fetchall()}
        finally:
            conn.close()

    def upgrade_faults(self) -> list[Fault]:
        """A later release's schema through an outage, and an upgrade in place with a journal.

        The later release is played by SQL, as its `migrate` would leave
        PostgreSQL: a column with a database default and a kindler_schema row
        for a migration this code lacks. Kindler, now the earlier instance,
        must refuse changes with a 503 (never a 500) and keep its journal;
        removing that row makes it the upgraded instance, which replays it.
        tests/db/sync/test_earlier_journal.py and tests/test_rolling_upgrade.py
        run a real earlier checkout.
        """
        hold = 3.0 if self.short else 10.0
        seen: dict[str, Any] = {}
        app, name = "clusters", "9999_chaos_future"

        def newer_schema_then_outage() -> None:
            faults.execute(
                self.pg,
                "ALTER TABLE clusters_cluster ADD COLUMN chaos_future text NOT NULL DEFAULT ''",
                f"INSERT INTO kindler_schema VALUES ('{app}', '{name}', '{'f' * 64}', "
                f"'99.0.0', '{datetime.now(UTC).isoformat()}')",
                dbname="kindler",
            )
            self.pg.stop("fast")
            wait_for_fallback(self.web_port, 15)

        def back_then_upgraded() -> None:
            self.pg.ensure_running()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                database = health(self.web_port) or {}
                if (database.get("schema") or {}).get("upgrade_required"):
                    break
                time.sleep(0.1)
            seen["upgrade_seen"] = (health(self.web_port) or {}).get("schema")
            # Writes meet the newer schema for a while: each gets a 503 saying to upgrade.
            time.sleep(hold)
            seen["journal_kept"] = self.journal_pending()
            faults.execute(
                self.pg,
                f"DELETE FROM kindler_schema WHERE app = '{app}' AND name = '{name}'",
                dbname="kindler",
            )

        def drop_future_column() -> None:
            faults.execute(
                self.pg, "ALTER TABLE clusters_cluster DROP COLUMN chaos_future", dbname="kindler"
            )

        def outage_then_upgrade_in_place() -> None:
            self.pg.stop("fast")
            wait_for_fallback(self.web_port, 15)
            time.sleep(hold)
            seen["journal"] = self.journal_pending()
            seen["down"] = time.monotonic()
            self.kindler.stop()

        def migrate_and_start() -> None:
            self.pg.ensure_running()
            seen["migrate"] = self.migrate_postgres()
            self.kindler.start()
            assert self.phase is not None
            self.phase.kindler_down.append((seen["down"], time.monotonic()))

        return [
            Fault(
                EARLIER_ON_NEWER,
                newer_schema_then_outage,
                back_then_upgraded,
                hold,
                after=drop_future_column,
                note=lambda: (
                    "a later release's schema (a column with DEFAULT '', a kindler_schema row "
                    "this code lacks), then pg_ctl stop for the hold; PostgreSQL back: health "
                    f"schema {seen.get('upgrade_seen')}, journal kept ({seen.get('journal_kept')} "
                    f"entries) while {self.upgrade_refusals()} writes got the 503 saying to "
                    "upgrade; then the row removed, as an upgraded instance knows it, and the "
                    "journal replayed"
                ),
            ),
            Fault(
                UPGRADED_IN_PLACE,
                outage_then_upgrade_in_place,
                migrate_and_start,
                0.0,
                note=lambda: (
                    f"pg_ctl stop, {hold:g} s of writes journaled ({seen.get('journal')} "
                    "entries), Kindler stopped (SIGTERM); PostgreSQL started, `manage.py migrate "
                    f"--database postgres` ({seen.get('migrate')}), Kindler started on the same "
                    "SQLite file: it migrates it and replays the journal"
                ),
            ),
        ]

    def journal_pending(self) -> int | None:
        """Return how many journal entries the instance reports waiting, if it answers."""
        database = health(self.web_port, self.token) or {}
        return ((database.get("sync") or {}).get("journal") or {}).get("pending")

    def upgrade_refusals(self) -> int:
        """Return how many writes were answered with the 503 that says to upgrade."""
        return sum(1 for c in self.load.calls if c.is_write and c.detail == OLDER)

    def sqlite_faults(self) -> list[Fault]:
        """Faults of the SQLite file while PostgreSQL is stopped."""
        hold = 4.0 if self.short else 15.0
        lock = faults.SqliteLock(self.sqlite)
        immutable = faults.Immutable(
            [self.sqlite, Path(f"{self.sqlite}-wal"), Path(f"{self.sqlite}-shm")]
        )
        filled: list[int] = []

        def during_outage(inject: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                self.pg.stop("fast")
                wait_for_fallback(self.web_port, 15)
                inject()

            return run

        def then_start(recover: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                try:
                    recover()
                finally:
                    self.pg.ensure_running()

            return run

        def fill() -> None:
            faults.checkpoint(self.sqlite)
            filled.append(self.disk.fill())

        full_skip = None if self.disk.mounted else self.disk.unavailable()
        return [
            Fault(
                "SQLite locked in an outage",
                during_outage(lock.inject),
                then_start(lock.recover),
                hold,
                note=lambda: "BEGIN EXCLUSIVE from another connection while PostgreSQL is stopped",
            ),
            Fault(
                "SQLite full in an outage",
                during_outage(fill),
                then_start(self.disk.unfill),
                hold,
                skipped=full_skip,
                note=lambda: (
                    f"{self.disk.size_mb} MiB {self.disk.kind} filled "
                    f"({sum(filled) >> 20} MiB filler) after a WAL checkpoint"
                ),
            ),
            Fault(
                "SQLite read-only in an outage",
                during_outage(immutable.inject),
                then_start(immutable.recover),
                hold,
                skipped=immutable.unavailable(),
                note=lambda: (
                    "chattr +i on the SQLite file, its -wal and -shm"
                    f" (on {self.disk.kind or 'the work folder'})"
                ),
            ),
        ]

    def flapping_fault(self) -> Fault:
        duration = 15.0 if self.short else 60.0
        flapping = faults.Flapping(self.pg)
        reconciler = Reconciler(self.env, self.workdir / "reconcile.log")
        outcome: dict[str, int | None] = {}

        def inject() -> None:
            self.reconciler = reconciler
            reconciler.start()
            flapping.inject()

        def stop_reconciler() -> None:
            outcome["exit"] = reconciler.stop()
            self.reconciler = None

        return Fault(
            f"PostgreSQL flapping {duration:g} s",
            inject,
            flapping.recover,
            duration,
            after=stop_reconciler,
            note=lambda: (
                f"{flapping.cycles} stop/start cycles with `manage.py reconcile --interval 1` "
                f"running (exit status {outcome.get('exit')})"
            ),
        )

    def run(self) -> dict[str, Any]:
        cap = 20000 if self.short else 60000
        self.load = Load(self.web_port, self.token, threads=4, cap=cap, write_share=0.4)
        self.watch = HealthWatch(self.web_port)
        self.watch.thread.start()
        self.load.start()
        try:
            if self.patroni:
                for fault in self.patroni_faults():
                    self.fault(fault)
                return self.report(wait_for_primary(self.web_port, 120))
            for fault in self.outage_faults():
                self.fault(fault)
            self.restart_during_replay()
            for fault in [
                self.long_replay_fault(),
                *self.postgres_faults(),
                *self.restore_faults(),
                *self.upgrade_faults(),
                *self.sqlite_faults(),
                self.flapping_fault(),
            ]:
                self.fault(fault)
            self.restarts_under_load()
            self.promotion()
        finally:
            self.load.stop()
            self.watch.stop_event.set()
        settled = wait_for_primary(self.web_port, 120)
        return self.report(settled)

    def begin(self, name: str, reads_kept: bool = False) -> Phase:
        self.phase = Phase(
            name,
            started=time.monotonic(),
            reads_kept=reads_kept,
            conflict_mark=self.conflict_mark(),
        )
        return self.phase

    def end(self, phase: Phase) -> None:
        phase.back = wait_for_primary(self.web_port, 60)

    def switches(self) -> list[str]:
        """Return the instance's switch history, oldest first, one JSON line each."""
        try:
            return Path(f"{self.sqlite}.switches").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def switch_count(self) -> int:
        return len(self.switches())

    def finish(self, phase: Phase) -> None:
        time.sleep(self.settle)
        phase.ended = time.monotonic()
        if phase.max_state_changes is not None:
            made = self.switches()[phase.switch_mark :]
            phase.state_changes = len(made)
            if made:
                causes = "; ".join(_switch_cause(line) for line in made)
                phase.note = (phase.note + f" (switches: {causes})").strip()
        phase.self_conflicts = self.conflicts_since(phase.conflict_mark)
        self.phases.append(phase)

    def conflicts_since(self, mark: int) -> list[str]:
        """Describe each conflict recorded after mark: kind, row, versions, fields that differ."""
        conn = psycopg2.connect(**self.primary.connect_kwargs("kindler"), connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT kind, model, name, seq, base, local, remote FROM kindler_db_conflict "
                    "WHERE id > %s ORDER BY id",
                    [mark],
                )
                return [describe_conflict(*row) for row in cursor.fetchall()]
        finally:
            conn.close()

    def fault(self, fault: Fault) -> None:
        if not self.wanted(fault.name):
            return
        phase = self.begin(fault.name, fault.reads_kept)
        phase.max_state_changes = fault.max_state_changes
        phase.expected_cause = fault.expected_cause
        phase.switch_mark = self.switch_count()
        if fault.skipped:
            phase.skipped = fault.skipped
            phase.ended = time.monotonic()
            self.phases.append(phase)
            return
        time.sleep(self.settle)
        phase.injected = time.monotonic()
        try:
            fault.inject()
            time.sleep(fault.hold)
        except Exception as exc:
            phase.error = f"{type(exc).__name__}: {exc}"
        finally:
            if fault.expected_cause is not None:
                phase.state_cause = (health(self.web_port, self.token) or {}).get("state_cause")
            phase.recovered = time.monotonic()
            fault.recover()
        self.end(phase)
        if fault.after is not None:
            fault.after()
        if fault.note is not None:
            phase.note = fault.note()
        self.finish(phase)

    def restart_during_replay(self) -> None:
        if not self.wanted(RESTART):
            return
        phase = self.begin(RESTART, reads_kept=True)
        time.sleep(self.settle)
        phase.injected = time.monotonic()
        self.pg.stop("fast")
        time.sleep(self.hold * 2)
        phase.recovered = time.monotonic()
        self.pg.start()
        seen = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            database = health(self.web_port)
            if database is not None and database["state"] != "fallback":
                seen = database
                break
            time.sleep(0.1)
        down_at = time.monotonic()
        self.kindler.kill()
        pending = ((seen or {}).get("sync") or {}).get("journal", {}).get("pending")
        phase.note = (
            f"killed (SIGKILL) in state {seen['state'] if seen else 'unknown'}"
            f" with {pending} journal entries left"
        )
        self.kindler.start()
        phase.kindler_down.append((down_at, time.monotonic()))
        self.end(phase)
        self.finish(phase)

    def restarts_under_load(self) -> None:
        """Restart granian RESTARTS times on a healthy PostgreSQL: SIGHUP, then kill and start."""
        if not self.wanted(f"Kindler restarted {RESTARTS} times"):
            return
        phase = self.begin(f"Kindler restarted {RESTARTS} times")
        time.sleep(self.settle)
        phase.injected = time.monotonic()
        reloads = kills = 0
        for index in range(RESTARTS):
            if index % 2 == 0:
                self.kindler.reload()
                reloads += 1
            else:
                down_at = time.monotonic()
                self.kindler.kill()
                self.kindler.start()
                phase.kindler_down.append((down_at, time.monotonic()))
                kills += 1
            time.sleep(self.settle * 2)
        phase.recovered = time.monotonic()
        phase.note = f"{reloads} x SIGHUP (graceful), {kills} x SIGKILL and start"
        self.end(phase)
        self.finish(phase)

    def promotion(self) -> None:
        """Kill -9 a primary with a synchronous standby listed beside it, then promote it."""
        if not self.wanted(PROMOTION):
            return
        phase = self.begin(PROMOTION, reads_kept=True)
        standby = self.standby = self.pg.standby()
        # A commit is acknowledged once the standby has it: kill -9 loses none.
        faults.execute(
            self.pg, "ALTER SYSTEM SET synchronous_standby_names = '*'", "SELECT pg_reload_conf()"
        )
        self.env.update(PG_HOST="127.0.0.1,127.0.0.1", PG_PORT=f"{self.pg.port},{standby.port}")
        down_at = time.monotonic()
        self.kindler.kill()
        self.kindler.start()
        phase.kindler_down.append((down_at, time.monotonic()))
        time.sleep(self.settle * 2)
        phase.injected = time.monotonic()
        self.pg.kill()
        time.sleep(self.hold / 3)
        promoted = time.monotonic()
        standby.promote()
        self.primary = standby
        phase.recovered = time.monotonic()
        address = f"127.0.0.1:{standby.port}"
        landed = None
        deadline = time.monotonic() + 60
        while landed is None and time.monotonic() < deadline:
            database = health(self.web_port, self.token)
            if (
                database
                and database["active"] == "postgres"
                and database["postgres"]["host"] == address
            ):
                landed = time.monotonic()
            time.sleep(0.05)
        phase.note = (
            "synchronous standby (pg_basebackup -R) listed in PG_HOST after the primary; "
            + (
                f"writes on the new primary {landed - promoted:.2f} s after pg_ctl promote, "
                f"{landed - phase.injected:.2f} s after kill -9"
                if landed is not None
                else "writes never reached the new primary"
            )
        )
        self.end(phase)
        self.finish(phase)

    def postgres_rows(self) -> dict[str, tuple[str, int]]:
        conn = psycopg2.connect(**self.primary.connect_kwargs("kindler"), connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT name, desired_state, http_port FROM clusters_cluster "
                    "WHERE name LIKE 'chaos-%%'"
                )
                return {name: (desired, port) for name, desired, port in cursor.fetchall()}
        finally:
            conn.close()

    def report(self, settled: bool) -> dict[str, Any]:
        problems = check(self.load.calls, self.postgres_rows())
        rows = [
            phase_row(phase, self.load.calls, problems, self.watch, BUDGET) for phase in self.phases
        ]
        counted = sum(row["missing_or_wrong"] + row["deleted_after_backup_back"] for row in rows)
        return {
            "short": self.short,
            "budget_seconds": BUDGET,
            "budget": (
                f"KINDLER_REQUEST_DEADLINE {BUDGET:g} = PG_CONNECT_TIMEOUT {CONNECT_TIMEOUT:g} "
                f"+ PG_STATEMENT_TIMEOUT {STATEMENT_TIMEOUT:g} + 1 "
                f"+ SQLITE_BUSY_TIMEOUT {SQLITE_BUSY_TIMEOUT:g}"
            ),
            "settled": settled,
            "requests": len(self.load.calls),
            "missing_or_wrong_outside_faults": len(problems) - counted,
            "faults": rows,
            "promise_kept": settled
            and len(problems) == counted
            and all(row["promise_kept"] for row in rows),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="Shorter holds (about 3 minutes).")
    parser.add_argument("--json", type=Path, help="Also write the result as JSON here.")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="Run only the faults whose name contains NAME (case-insensitive; repeatable).",
    )
    parser.add_argument(
        "--patroni",
        action="store_true",
        help="Run the Patroni faults against a Patroni cluster (etcd, two nodes) instead.",
    )
    args = parser.parse_args()
    chaos = Chaos(short=args.short, only=args.only, patroni=args.patroni)
    try:
        chaos.setup()
        result = chaos.run()
    finally:
        chaos.teardown()
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["promise_kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
