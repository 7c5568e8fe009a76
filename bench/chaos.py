"""Break PostgreSQL, HAProxy, SQLite and Kindler itself under load; check every acknowledged write.

Run as `.venv/bin/python bench/chaos.py` (about 8 minutes) or with `--short`
(about 3 minutes; tests/test_chaos.py runs that). It starts, all on loopback:
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
the documented bound PG_CONNECT_TIMEOUT + PG_STATEMENT_TIMEOUT + 1 +
SQLITE_BUSY_TIMEOUT, and for the first rows (outages with a healthy SQLite
file) no failed read once the switch was seen.

Two rows put another database in PostgreSQL's place while Kindler is cut
off: one restored with pg_restore from a pg_dump taken under load a few
seconds earlier, one empty and then migrated. They also report how many rows
Kindler wrote back into it (RestoredRow), and apart from "missing or wrong"
the acknowledged deletes the restore undid: clusters PostgreSQL had already
removed when it was cut off, which the backup brings back and which no copy
remembers deleting.

The last row gives PostgreSQL a synchronous streaming standby (pg_basebackup
-R), restarts Kindler with both servers in PG_HOST, kills the primary with -9
and promotes the standby with pg_ctl promote: every acknowledged write must be
on the new primary, and the note says how long after the promote (and after
the kill) writes landed there.

`--only NAME` (repeatable) runs only the faults whose name contains NAME.
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
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import psycopg2  # noqa: E402

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
from tests import faults  # noqa: E402
from tests.pgserver import PostgresServer, free_ports  # noqa: E402

__all__ = ["haproxy_config", "main", "markdown"]

# The timeouts the run gives Kindler, and the bound they make (see
# kindler/db/failover/middleware.py): connect, a statement plus the client's
# 1 s margin, then SQLite's write lock once PostgreSQL was lost.
CONNECT_TIMEOUT, STATEMENT_TIMEOUT, LOCK_TIMEOUT, SQLITE_BUSY_TIMEOUT = 1.0, 2.0, 1.0, 2.0
BUDGET = CONNECT_TIMEOUT + STATEMENT_TIMEOUT + 1.0 + SQLITE_BUSY_TIMEOUT
RESTART = "Kindler restart in replay"
RESTARTS = 5
PROMOTION = "primary killed, standby promoted"


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
    def __init__(self, short: bool, only: list[str] | None = None) -> None:
        self.short = short
        # Fault names (or parts of them) to run; None runs every fault.
        self.only = [name.lower() for name in only] if only else None
        self.hold = 3.0 if short else 10.0
        self.settle = 1.0 if short else 4.0
        self.workdir = Path(tempfile.mkdtemp(prefix="kindler-chaos-"))
        self.token = secrets.token_hex(16)
        self.phases: list[Phase] = []
        self.disk = faults.SmallDisk(self.workdir / "sqlite", self.workdir / "sqlite.img")
        self.reconciler: Reconciler | None = None
        self.phase: Phase | None = None

    def wanted(self, name: str) -> bool:
        return self.only is None or any(part in name.lower() for part in self.only)

    def setup(self) -> None:
        # fsync and synchronous commits on: a kill -9 must not drop an acknowledged
        # commit, or the count would blame Kindler for PostgreSQL's settings.
        self.pg = PostgresServer(durable=True)
        self.pg.init()
        self.pg.start()
        self.pg.create_database("kindler")
        # The server that takes writes: the standby once it is promoted.
        self.primary = self.pg
        self.standby: PostgresServer | None = None
        self.haproxy_port, self.web_port = free_ports(2)
        config, admin = haproxy_config(self.workdir, self.haproxy_port, self.pg.port)
        self.haproxy = HAProxy(config, admin, {**os.environ, "PG_USER": self.pg.user})
        self.haproxy.start()
        if self.disk.unavailable() is None:
            self.disk.mount()
        else:
            self.disk.folder.mkdir()
        self.sqlite = self.disk.folder / "kindler.db"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PG_", "KINDLER_", "PROMETHEUS_", "SQLITE_"))
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="kindler.settings",
            PG_HOST="127.0.0.1",
            PG_PORT=str(self.haproxy_port),
            PG_DATABASE="kindler",
            PG_USER=self.pg.user,
            PG_PASSWORD=self.pg.password,
            PG_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
            PG_STATEMENT_TIMEOUT=str(STATEMENT_TIMEOUT),
            PG_LOCK_TIMEOUT=str(LOCK_TIMEOUT),
            PG_POOL_MAX="10",
            SQLITE_BUSY_TIMEOUT=str(SQLITE_BUSY_TIMEOUT),
            SQLITE_PATH=str(self.sqlite),
            SECRET_KEY=secrets.token_urlsafe(50),
            KINDLER_API_TOKEN=self.token,
            KINDLER_HEALTH_INTERVAL="0.5",
            KINDLER_MIRROR_INTERVAL="1",
            KINDLER_WORKERS="2",
            KINDLER_BIND=f"127.0.0.1:{self.web_port}",
            KINDLER_ACCESS_LOG="/dev/null",
            KINDLER_FAKE_STATE=str(self.workdir / "fakes"),
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
        if self.standby is not None:
            steps.append(self.standby.destroy)
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

    def postgres_faults(self) -> list[Fault]:
        """Faults of a PostgreSQL that still answers: read-only, locks, full, unmigrated."""
        row_hold, table_hold = (5.0, 4.0) if self.short else (20.0, 15.0)
        short_hold = 4.0 if self.short else 10.0
        read_only = faults.ReadOnlyServer(self.pg)
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

        return [
            Fault(
                "PostgreSQL read-only",
                read_only.inject,
                read_only.recover,
                short_hold,
                note=lambda: "ALTER SYSTEM SET default_transaction_read_only = on; reload",
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
            for fault in self.outage_faults():
                self.fault(fault)
            self.restart_during_replay()
            for fault in [
                *self.postgres_faults(),
                *self.restore_faults(),
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

    def finish(self, phase: Phase) -> None:
        time.sleep(self.settle)
        phase.ended = time.monotonic()
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
                f"PG_CONNECT_TIMEOUT {CONNECT_TIMEOUT:g} + PG_STATEMENT_TIMEOUT "
                f"{STATEMENT_TIMEOUT:g} + 1 + SQLITE_BUSY_TIMEOUT {SQLITE_BUSY_TIMEOUT:g}"
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
    args = parser.parse_args()
    chaos = Chaos(short=args.short, only=args.only)
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
