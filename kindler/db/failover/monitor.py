"""Probe PostgreSQL and drive the instance's shared state (kindler.db.failover.state).

One process of an instance leads: the first to take an flock on the leader
file, released by the kernel when that process dies, so another takes over
within one interval. The leader probes PostgreSQL every
KINDLER_HEALTH_INTERVAL seconds off the request path and makes every switch
the probes call for: primary -> fallback when PostgreSQL cannot take writes,
fallback -> recovering when it can again, and recovering -> primary once the
recovery hooks (the journal replay) have run, the last of them under SQLite's
write lock (state.promote). The other processes only read the shared state,
and any process may declare an outage it ran into (mark_down).

PostgreSQL is usable only when it accepts a new connection, is not read-only
(a standby, a demoted primary, default_transaction_read_only) and holds every
migration this code knows. Anything less is an outage for Kindler's writes.
While the instance is off PostgreSQL, and when a failed query asks, the probe
also writes: a temporary table of one row in a transaction rolled back, which
must extend a file in the database's tablespace, so a full disk (SQLSTATE
53100) keeps the instance on SQLite instead of starting a replay that fails.

A recovery that fails sends the instance back (or keeps it) off PostgreSQL and
the next one waits KINDLER_HEALTH_INTERVAL, doubling after each failure up to
KINDLER_RECOVERY_BACKOFF_MAX: one log line per attempt, not one per probe.

With several servers listed in PG_HOST, each probe connects to each of them
(in parallel, so one that hangs costs one timeout) and records its role; the
instance is usable when one of them takes writes, and the first such server
is where libpq sends Kindler's connections. When that server changes (a
standby was promoted) the leader records the move in the state file and the
switch history.

In PostgreSQL-only mode (KINDLER_FALLBACK=off) an outage is the state
`unavailable` instead of `fallback`, and the instance goes straight back to
primary when PostgreSQL takes writes again: there is no journal to replay.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from typing import Any

import psycopg2
import psycopg2.errors
from django.conf import settings
from django.db import connections
from django.db.migrations.loader import MigrationLoader
from django.dispatch import Signal
from django.utils.module_loading import import_string

from kindler.db import POSTGRES, SQLITE, pool
from kindler.db.failover import schema, state, timeouts
from kindler.db.failover.errors import (
    describe_error,
    is_cut_short,
    is_postgres_outage,
    write_blocked,
)
from kindler.db.failover.hosts import Host, configured_hosts
from kindler.db.failover.pinning import (
    postgres_configured,
    postgres_only,
    sqlite_fallback_enabled,
)
from kindler.db.failover.state import State, StateFileError, Transition
from kindler.db.pool import probes

logger = logging.getLogger("kindler.db")
# Why a new leader checks a PostgreSQL an earlier run left as primary.
START_CHECK = "checking PostgreSQL at start"

SWITCH_HISTORY = 50
# A recovery cut off while PostgreSQL stays usable (its backend ended) is tried this often in all.
RECOVERY_ATTEMPTS = 3
# A probe whose kept connection failed tries a fresh one if this much of its budget is left.
RETRY_MIN_SECONDS = 0.1
# libpq treats a connect_timeout under 2 s as 2 s.
LIBPQ_SHORTEST_CONNECT_TIMEOUT = 2.0
# Needs a new file and one page of it in the database's tablespace; rolled back.
WRITE_CHECK = (
    "BEGIN; CREATE TEMPORARY TABLE kindler_write_check ON COMMIT DROP AS SELECT 1 AS checked"
)
# Sent by the leading process after each probe that found PostgreSQL usable
# and the instance on it; the sync layer runs its mirror from here.
ticked = Signal()
# Sent with probe=Probe by the leading process after every probe, whatever it found.
probed = Signal()


class Role(StrEnum):
    """What one listed PostgreSQL server is, as the last probe found it."""

    PRIMARY = "primary"
    STANDBY = "standby"
    READ_ONLY = "read-only"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class HostProbe:
    """What the probe found on one listed server."""

    address: str
    role: Role
    latency_ms: float | None
    error: str | None
    # The schema version the server's database records (kindler.db.failover.schema).
    schema: str | None = None


@dataclass(frozen=True)
class Probe:
    reachable: bool
    usable: bool
    latency_ms: float | None
    error: str | None
    at: datetime
    # The listed server that accepts writes (where Kindler's connections go), if any.
    host: str | None = None
    hosts: tuple[HostProbe, ...] = ()
    # The schema version the database records, as the last probe read it.
    schema: str | None = None

    @property
    def upgrade_required(self) -> bool:
        """Return True when the database holds a schema newer than this code."""
        return bool(self.error and self.error.startswith(schema.UPGRADE_REQUIRED))


@dataclass(frozen=True)
class Snapshot:
    # The alias queries go to; None in PostgreSQL-only mode while none can.
    active: str | None
    state: State
    since: datetime
    cause: str
    configured: bool
    probe: Probe | None
    leader: bool = False
    transitions: tuple[Transition, ...] = field(default_factory=tuple)


@cache
def expected_migrations() -> frozenset[tuple[str, str]]:
    """Return the newest migration of every app, as PostgreSQL must have applied them."""
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    return frozenset(graph.leaf_nodes())


def probe_postgres(
    write_check: bool = False, fresh: bool = False, budget: float | None = None
) -> Probe:
    """Connect to every listed server and check that one of them can take Kindler's writes.

    With write_check, a primary must also store a row (disk space, see WRITE_CHECK);
    with fresh, the kept probe connection is not used; budget bounds each server's
    probe (PG_CONNECT_TIMEOUT when None).
    """
    at = datetime.now(UTC)
    servers = configured_hosts()
    probe_host = functools.partial(_probe_host, write_check=write_check, fresh=fresh, budget=budget)
    if len(servers) == 1:
        found = [probe_host(servers[0])]
    else:
        # In parallel: a paused server costs the probe one timeout, not one each.
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            found = list(pool.map(probe_host, servers))
    hosts = tuple(host for host, _ in found)
    primaries = [(host, problem) for host, problem in found if host.role is Role.PRIMARY]
    if primaries:
        # libpq takes the first listed server that accepts writes.
        host, problem = primaries[0]
        return Probe(
            True, problem is None, host.latency_ms, problem, at, host.address, hosts, host.schema
        )
    reachable = any(host.role is not Role.UNREACHABLE for host in hosts)
    if len(hosts) == 1:
        return Probe(reachable, False, hosts[0].latency_ms, hosts[0].error, at, None, hosts)
    error = "no listed host accepts writes: " + ", ".join(
        f"{host.address} {host.role}" + (f" ({host.error})" if host.error else "") for host in hosts
    )
    return Probe(reachable, False, None, error, at, None, hosts)


def _probe_host(
    server: Host, write_check: bool = False, fresh: bool = False, budget: float | None = None
) -> tuple[HostProbe, str | None]:
    """Probe one server on its probe connection; return what it is and, for a primary, why it
    cannot take Kindler's writes (None when it can)."""
    with timeouts.outside_request():
        return _probe_host_within(server, write_check, fresh, budget)


def _probe_host_within(
    server: Host, write_check: bool, fresh: bool, budget: float | None
) -> tuple[HostProbe, str | None]:
    started = time.monotonic()
    ends = started + (float(settings.PG_CONNECT_TIMEOUT) if budget is None else budget)
    try:
        reuse = not fresh
        while True:
            try:
                role, problem, recorded = _ask(server, ends - time.monotonic(), reuse, write_check)
                break
            except psycopg2.Error as exc:
                # The kept connection may have died alone (terminated, a
                # proxy's idle timeout), and a new one may be ended as it
                # starts: a fresh one, within what is left of the same
                # budget, tells that apart from a server that is gone.
                # Only a connection the server ended says it is there; after
                # any other failure of the kept one, a fresh connection is
                # tried only with time for it: libpq waits at least 2 s for
                # one, and a paused server would take the probe past its budget.
                left = ends - time.monotonic()
                cut_short = is_cut_short(exc)
                if left < RETRY_MIN_SECONDS or not (
                    cut_short or (reuse and left >= LIBPQ_SHORTEST_CONNECT_TIMEOUT)
                ):
                    raise
                reuse = False
    except psycopg2.Error as exc:
        failure = describe_error(exc)
        return HostProbe(server.address, Role.UNREACHABLE, None, failure), failure
    latency = round((time.monotonic() - started) * 1000, 2)
    shown = problem if role is not Role.PRIMARY else None
    return HostProbe(server.address, role, latency, shown, recorded), problem


def _ask(
    server: Host, budget: float, reuse: bool, write_check: bool
) -> tuple[Role, str | None, str | None]:
    # Every wait is bounded by the budget on the client side, so a killed,
    # stopped or paused server fails the probe within it, kept connection
    # or not.
    with timeouts.deadline(budget):
        connect = functools.partial(_connect_probe, server, budget)
        conn = probes.take(server.address, connect, reuse=reuse)
        try:
            role, problem, recorded = _role_of(conn)
            if write_check and role is Role.PRIMARY and problem is None:
                problem = _check_write(conn)
        except BaseException:
            probes.discard(conn)
            raise
        # Kept for the next probe only while the server is healthy.
        probes.give_back(server.address, conn, role is Role.PRIMARY and problem is None)
    return role, problem, recorded


def _connect_probe(server: Host, budget: float) -> psycopg2.extensions.connection:
    db = settings.DATABASES[POSTGRES]
    options = db.get("OPTIONS", {})
    conn = psycopg2.connect(
        host=server.host,
        port=server.port,
        dbname=db["NAME"],
        user=db["USER"],
        password=db["PASSWORD"],
        connect_timeout=max(1, round(budget)),
        sslmode=options.get("sslmode", "prefer"),
        application_name="kindler-health",
        options=f"-c statement_timeout={max(1, int(budget * 1000))}",
    )
    # Each probe is its own statement: no transaction left open between probes.
    conn.autocommit = True
    return conn


def _role_of(conn: psycopg2.extensions.connection) -> tuple[Role, str | None, str | None]:
    """Return what the server is, why it cannot take Kindler's writes, and its schema version."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), "
            "to_regclass('django_migrations') IS NOT NULL, "
            f"to_regclass('{schema.TABLE}') IS NOT NULL"
        )
        row = cursor.fetchone() or (False, "off", False, False)
        in_recovery, read_only, has_migrations, has_schema = row
        check = schema.read(cursor) if has_schema else schema.SchemaCheck(None)
        if in_recovery:
            return (
                Role.STANDBY,
                "PostgreSQL is a standby (in recovery) and cannot take writes",
                check.database,
            )
        if read_only == "on":
            return (
                Role.READ_ONLY,
                "PostgreSQL is read-only (default_transaction_read_only is on)",
                check.database,
            )
        if not has_migrations:
            return Role.PRIMARY, "PostgreSQL is not migrated: run `manage.py migrate`", None
        if check.newer:
            # Checked before the migrations this code needs: a newer schema
            # holds them all, and the answer is to upgrade, not to migrate.
            return Role.PRIMARY, check.problem(), check.database
        wanted = sorted(expected_migrations())
        cursor.execute(
            "SELECT count(*) FROM django_migrations WHERE (app, name) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))",
            [[app for app, _ in wanted], [name for _, name in wanted]],
        )
        (applied,) = cursor.fetchone() or (0,)
        if applied < len(wanted):
            return (
                Role.PRIMARY,
                "PostgreSQL lacks migrations this Kindler needs: run `manage.py migrate`",
                check.database,
            )
    return Role.PRIMARY, None, check.database


def _check_write(conn: psycopg2.extensions.connection) -> str | None:
    """Return why PostgreSQL cannot store a row (a full disk), or None when it can."""
    with conn.cursor() as cursor:
        try:
            cursor.execute(WRITE_CHECK)
        except psycopg2.errors.InsufficientPrivilege:
            # No TEMPORARY privilege on the database: this check cannot tell.
            return None
        except psycopg2.Error as exc:
            blocked = write_blocked(exc)
            if blocked is None:
                raise
            return blocked
        finally:
            if not conn.closed:
                cursor.execute("ROLLBACK")
    return None


def close_postgres_connection() -> None:
    """Close this thread's idle PostgreSQL connection, ignoring one already broken."""
    _close_idle(POSTGRES, lambda connection: connection.close())


def close_unusable_sqlite_connection() -> None:
    """Close this thread's SQLite connection if an error left it unusable (read-only)."""
    _close_idle(SQLITE, lambda connection: connection.close_if_unusable_or_obsolete())


def _close_idle(alias: str, close: Callable[[Any], None]) -> None:
    if alias not in settings.DATABASES:
        return
    connection = connections[alias]
    # A connection inside a transaction belongs to code still running; it is
    # closed by whoever leaves that transaction.
    if connection.connection is None or connection.in_atomic_block:
        return
    with contextlib.suppress(Exception):
        close(connection)


def close_thread_connections() -> None:
    """Close this thread's Django connections, ignoring ones already broken."""
    for connection in connections.all(initialized_only=True):
        with contextlib.suppress(Exception):
            connection.close()


def run_recovery_hooks() -> None:
    """Run every KINDLER_RECOVERY_HOOKS callable; the first failure stops them."""
    for path in settings.KINDLER_RECOVERY_HOOKS:
        hook: Callable[[], object] = import_string(path)
        hook()


def probe_path() -> str:
    return str(state.base_path()) + ".probe"


def leader_path() -> str:
    return str(state.base_path()) + ".leader"


def _write_probe(probe: Probe) -> None:
    data = {**asdict(probe), "at": probe.at.isoformat()}
    data["hosts"] = [{**asdict(host), "role": str(host.role)} for host in probe.hosts]
    path = probe_path()
    spare = f"{path}.{os.getpid()}"
    with contextlib.suppress(OSError):
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(spare, path)


def _read_probe() -> Probe | None:
    try:
        with open(probe_path(), encoding="utf-8") as handle:
            data = json.load(handle)
        data["at"] = datetime.fromisoformat(data["at"])
        hosts = [{**host, "role": Role(host["role"])} for host in data.get("hosts", [])]
        data["hosts"] = tuple(HostProbe(**host) for host in hosts)
        return Probe(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


class HealthMonitor:
    """This process's view of the instance state, and its share in keeping it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tick_lock = threading.Lock()
        self._pid: int | None = None
        self._leader_fd: int | None = None
        self._probe: Probe | None = None
        self._transitions: deque[Transition] = deque(maxlen=SWITCH_HISTORY)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # When the state file cannot be written, this process still falls
        # back on its own until this time.monotonic() value.
        self._forced_until = 0.0
        self._recovered_once = False
        # This process's first recovery began at start, not after an outage.
        self._started_recovering = False
        # The last probe a failed query asked for: when it started (monotonic) and what it found.
        self._confirm_lock = threading.Lock()
        self._confirmed: tuple[float, Probe] | None = None
        # Recoveries failed in a row, and the time.monotonic() before which none is tried.
        self._failed_recoveries = 0
        self._retry_at = 0.0

    def active_alias(self) -> str:
        """Return the alias every unpinned query should use now."""
        self._ensure_started()
        if not postgres_configured():
            return SQLITE
        if self._takes_writes() or not sqlite_fallback_enabled():
            return POSTGRES
        return SQLITE

    def upgrade_required(self) -> bool:
        """Return True when the last probe found PostgreSQL on a schema newer than this code."""
        self._ensure_started()
        if not postgres_configured():
            return False
        probe = self._probe if self._leader_fd is not None else _read_probe()
        return probe is not None and probe.upgrade_required

    def unavailable(self) -> str | None:
        """Return why nothing can be served now in PostgreSQL-only mode, else None."""
        self._ensure_started()
        if not postgres_only() or self._takes_writes():
            return None
        shared = state.read()
        cause = shared.cause if shared is not None else "starting"
        return (
            f"PostgreSQL cannot take writes ({cause}) and this Kindler runs without a local "
            "fallback (KINDLER_FALLBACK=off): nothing can be read or saved until it is back."
        )

    def _takes_writes(self) -> bool:
        if time.monotonic() < self._forced_until:
            return False
        shared = state.read()
        return shared is not None and shared.state is State.PRIMARY

    def snapshot(self) -> Snapshot:
        """Return the instance state and the last probe, for status pages."""
        self._ensure_started()
        if not postgres_configured():
            return Snapshot(SQLITE, State.PRIMARY, _started_at, "embedded", False, None)
        shared = state.read()
        probe = self._probe if self._leader_fd is not None else _read_probe()
        with self._lock:
            transitions = tuple(self._transitions)
        if shared is None:
            return Snapshot(
                None if postgres_only() else SQLITE,
                down_state(),
                _started_at,
                "starting",
                True,
                probe,
                False,
                transitions,
            )
        return Snapshot(
            active=None if self.unavailable() else self.active_alias(),
            state=shared.state,
            since=shared.since,
            cause=shared.cause,
            configured=True,
            probe=probe,
            leader=self._leader_fd is not None,
            transitions=transitions,
        )

    def mark_down(self, cause: str) -> None:
        """Fall back at once, for every process: a query just lost PostgreSQL."""
        self._ensure_started()
        try:
            down = down_state()
            if state.read() is None:
                state.initialise(down, cause)
            else:
                self._switch({State.PRIMARY, State.RECOVERING}, down, cause)
        except StateFileError as exc:
            logger.error("Cannot record the fallback in the state file: %s", exc)
            self._forced_until = time.monotonic() + max(2 * settings.KINDLER_HEALTH_INTERVAL, 1)
        self._wake.set()

    def confirm_outage(self, cause: str) -> bool:
        """Probe PostgreSQL after a query failed; fall back only if it cannot take writes.

        Return True when the instance is (now) off PostgreSQL. Threads that
        fail together share the first probe started after their failure.
        """
        self._ensure_started()
        if not self._takes_writes():
            self.mark_down(cause)
            return True
        failed_at = time.monotonic()
        with self._confirm_lock:
            last = self._confirmed
            if last is not None and last[0] >= failed_at:
                probe = last[1]
            else:
                # Within what is left of the request's deadline: a probe cut
                # short by it proves nothing, and the leader's probe decides.
                full = float(settings.PG_CONNECT_TIMEOUT)
                left = timeouts.request_time_left()
                budget = full if left is None else min(full, left)
                if budget < RETRY_MIN_SECONDS:
                    return False
                started = time.monotonic()
                # A fresh connection: the kept probe connection may work
                # where new ones cannot (a paused postmaster).
                probe = probe_postgres(write_check=True, fresh=True, budget=budget)
                if self._leader_fd is None:
                    # Only the leading process keeps a probe connection between probes.
                    probes.close_all()
                if not probe.usable and budget < full:
                    return False
                self._confirmed = (started, probe)
        if probe.usable:
            logger.info("PostgreSQL still takes writes after a failed query (%s)", cause)
            return False
        self.mark_down(f"{cause}; probe: {probe.error}")
        return True

    def check_now(self) -> Snapshot:
        """Probe now and make the switches the probe calls for, as the thread would."""
        self._ensure_started()
        self._tick()
        return self.snapshot()

    def stop(self) -> None:
        """Stop the probing thread (tests and clean shutdown)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        pool.probes.close_all()

    def stand_down(self) -> None:
        """Stop probing and leading in this process; it still reads the shared state.

        For a process that must not act for the instance, such as a test that
        plays another process of it.
        """
        self._ensure_started()
        self.stop()
        with self._lock:
            self._release_leadership()

    def reset(self) -> None:
        """Forget everything, as a freshly forked process would."""
        self.stop()
        with self._lock:
            self._pid = None
            self._release_leadership()

    def _ensure_started(self) -> None:
        # Keyed on the pid, so a worker the web server forked after this module
        # was imported starts its own thread instead of inheriting a dead one.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._leader_fd = None  # an inherited descriptor is the parent's
            self._stop = threading.Event()
            self._wake = threading.Event()
            self._transitions.clear()
            self._probe = None
            self._forced_until = 0.0
            self._recovered_once = False
            self._started_recovering = False
            self._confirmed = None
            self._failed_recoveries = 0
            self._retry_at = 0.0
            if not postgres_configured():
                logger.info("PostgreSQL not configured (PG_HOST is unset)")
                logger.info("Using SQLite backend (embedded)")
                return
            self._learn_state()
            self._thread = threading.Thread(target=self._run, name="kindler-health", daemon=True)
            self._thread.start()

    def _learn_state(self) -> None:
        # A process never guesses: the one that leads probes before its first
        # query (so a state left by an earlier run is brought up to date), the
        # others read what it decided, waiting for it if it was never set.
        self._tick()
        deadline = time.monotonic() + float(settings.PG_CONNECT_TIMEOUT) + 1
        while state.read() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        shared = state.read()
        if shared is not None and shared.state is State.PRIMARY and self._leader_fd is None:
            # The leader may not have noticed an outage yet; a process about to
            # use PostgreSQL checks it once and, if it cannot, says so for all.
            checked = probe_postgres()
            # Only the leading process keeps a probe connection between probes.
            probes.close_all()
            self._probe = checked
            if not checked.usable:
                self.mark_down(f"probe: {checked.error}")
                shared = state.read()
        if shared is not None and shared.state is State.PRIMARY:
            logger.info("Using PostgreSQL backend (primary)")
            return
        probe = self._probe or _read_probe()
        if postgres_only():
            logger.warning(
                "No database to serve from (PostgreSQL-only mode, KINDLER_FALLBACK=off): %s",
                probe.error if probe is not None else "PostgreSQL not probed yet",
            )
            return
        if probe is not None and probe.error:
            logger.warning("PostgreSQL connection failed: %s", probe.error)
        logger.warning(
            "Using SQLite backend (%s)", shared.state if shared is not None else "fallback"
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=settings.KINDLER_HEALTH_INTERVAL)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
                self._tend_pool()
            except Exception:
                # The thread must outlive any surprise, or the instance never recovers.
                logger.exception("Health check failed unexpectedly")

    @staticmethod
    def _tend_pool() -> None:
        # Every process, leader or not: off PostgreSQL, keep none of its slots
        # (it may be out of them); on it, let idle connections beyond the
        # minimum go.
        shared = state.read()
        if shared is not None and shared.state is State.PRIMARY:
            pool.prune_idle()
        else:
            pool.clear_idle()

    def _lead(self) -> bool:
        if self._leader_fd is not None:
            return True
        try:
            fd = os.open(leader_path(), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._leader_fd = fd
        return True

    def _release_leadership(self) -> None:
        if self._leader_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._leader_fd)
            self._leader_fd = None

    def _tick(self) -> None:
        if not postgres_configured():
            return
        with self._tick_lock:
            if not self._lead():
                return
            before = state.read()
            # Off PostgreSQL the probe also writes: a server that answers but
            # cannot store anything (a full disk) must not start a replay.
            wrote = before is None or before.state is not State.PRIMARY
            probe = probe_postgres(write_check=wrote)
            self._probe = probe
            _write_probe(probe)
            probed.send_robust(sender=HealthMonitor, probe=probe)
            shared = state.read()
            down = down_state()
            if shared is None:
                up = State.RECOVERING if sqlite_fallback_enabled() else State.PRIMARY
                target = up if probe.usable else down
                cause = "instance started" if probe.usable else f"instance started: {probe.error}"
                shared = state.initialise(target, cause)
                self._started_recovering = target is State.RECOVERING
            if probe.host is not None:
                self._follow_host(probe.host)
            if not probe.usable:
                cause = f"probe: {probe.error}"
                if before is not None and shared.state is down:
                    self._explain(shared, cause)
                self._switch(set(State) - {down}, down, cause)
                return
            if not wrote and shared.state is not State.PRIMARY:
                # A request fell back while this probe ran: only a probe that
                # also wrote may bring the instance back (a full disk answers).
                return
            if not sqlite_fallback_enabled():
                # Nothing to carry back: PostgreSQL-only mode never wrote to SQLite.
                self._switch(set(State) - {State.PRIMARY}, State.PRIMARY, "PostgreSQL takes writes")
                return
            if time.monotonic() < self._retry_at and shared.state is not State.PRIMARY:
                return  # a recovery failed lately: wait before the next one
            if shared.state in (State.FALLBACK, State.UNAVAILABLE):
                down_states = {State.FALLBACK, State.UNAVAILABLE}
                self._switch(down_states, State.RECOVERING, "PostgreSQL answers again")
            elif shared.state is State.PRIMARY and not self._recovered_once:
                # A new leader recovers once before trusting a primary state
                # an earlier run left: PostgreSQL may have been replaced or
                # restored meanwhile, and must not take writes before the
                # sync layer has checked it.
                self._switch({State.PRIMARY}, State.RECOVERING, START_CHECK)
            current = state.read()
            if current is not None and current.state is State.RECOVERING:
                self._recover()
                self._recovered_once = True
            current = state.read()
            if current is not None and current.state is State.PRIMARY:
                ticked.send_robust(sender=HealthMonitor)

    def _recover(self) -> None:
        for attempt in range(1, RECOVERY_ATTEMPTS + 1):
            try:
                # This thread outlives the server it talks to: a connection kept
                # from before the outage is dead, so start each recovery afresh.
                close_postgres_connection()
                run_recovery_hooks()
                transition = state.promote(run_recovery_hooks, "recovery finished")
                if transition is not None:
                    self._log(transition)
                self._failed_recoveries = 0
                return
            except Exception as exc:
                if not is_postgres_outage(exc):
                    # Any other failure leaves the instance on SQLite, recovering.
                    self._recovery_failed(describe_error(exc))
                    return
                # Replay is idempotent: a recovery whose backend was ended
                # while the server stays usable simply runs again.
                close_postgres_connection()
                probe = probe_postgres(write_check=True)
                if probe.usable and attempt < RECOVERY_ATTEMPTS:
                    logger.warning(
                        "Recovery interrupted (%s); PostgreSQL still takes writes, trying again",
                        describe_error(exc),
                    )
                    continue
                why = write_blocked(exc) or probe.error or describe_error(exc)
                self._recovery_failed(why)
                self._switch({State.RECOVERING}, State.FALLBACK, f"recovery failed: {why}")
                return
            finally:
                close_postgres_connection()
                # A connection that opened the SQLite file while it was
                # read-only stays so: the next recovery opens it afresh.
                close_unusable_sqlite_connection()

    def _recovery_failed(self, why: str) -> None:
        self._failed_recoveries += 1
        first = max(float(settings.KINDLER_HEALTH_INTERVAL), 0.1)
        wait = min(
            first * 2 ** (self._failed_recoveries - 1),
            max(float(settings.KINDLER_RECOVERY_BACKOFF_MAX), first),
        )
        self._retry_at = time.monotonic() + wait
        logger.error(
            "Recovery failed, staying on SQLite (attempt %d, next in %g s): %s",
            self._failed_recoveries,
            wait,
            why,
        )

    def _switch(self, expected: set[State], target: State, cause: str) -> None:
        transition = state.switch(expected, target, describe_error(Exception(cause)))
        if transition is None:
            return
        self._started_recovering = cause == START_CHECK
        self._log(transition)
        if target in (State.FALLBACK, State.UNAVAILABLE):
            close_postgres_connection()
            pool.clear_idle()

    def _explain(self, shared: state.Shared, cause: str) -> None:
        # Only a new kind of reason is worth a line: details such as a file
        # name in a disk-full message change with every probe.
        if _gist(cause) == _gist(shared.cause):
            return
        try:
            changed = state.explain(shared.state, describe_error(Exception(cause)))
        except StateFileError as exc:
            logger.error("Cannot record the cause in the state file: %s", exc)
            return
        if changed:
            logger.info("Still %s, for a new reason: %s", shared.state, cause)

    def _follow_host(self, address: str) -> None:
        try:
            move = state.move_host(address)
        except StateFileError as exc:
            logger.error("Cannot record the PostgreSQL host in the state file: %s", exc)
            return
        if move is not None:
            logger.warning(
                "PostgreSQL primary moved from %s to %s (state %s)",
                move.source,
                move.target,
                move.state,
            )

    def _log(self, transition: Transition) -> None:
        with self._lock:
            self._transitions.append(transition)
        # Checking PostgreSQL before first serving from it is every start,
        # not news; any other switch is.
        routine = not self._recovered_once and (
            transition.cause == START_CHECK
            or (transition.target is State.PRIMARY and self._started_recovering)
        )
        logger.log(
            logging.INFO if routine else logging.WARNING,
            "Database state %s -> %s after %.3f s: %s (active: %s)",
            transition.source,
            transition.target,
            transition.seconds_in_source,
            transition.cause,
            _active_after(transition.target),
        )


def _gist(cause: str) -> str:
    """Return a cause without its parenthesised details and the query that reported it."""
    return cause.rsplit("probe: ", 1)[-1].split(" (", 1)[0]


def down_state() -> State:
    """Return the state an outage puts the instance in: fallback, or unavailable without SQLite."""
    return State.FALLBACK if sqlite_fallback_enabled() else State.UNAVAILABLE


def _active_after(target: State) -> str:
    if target is State.PRIMARY:
        return POSTGRES
    return SQLITE if sqlite_fallback_enabled() else "none"


_started_at = datetime.now(UTC)
monitor = HealthMonitor()


def report_outage(exc: BaseException, where: str) -> bool:
    """Return whether exc says PostgreSQL was lost; if so, fall back once a probe confirms it.

    The one entry point for code outside a request (the reconciler, commands)
    that runs into a database error.
    """
    if not is_postgres_outage(exc):
        return False
    close_postgres_connection()
    if monitor.confirm_outage(f"{where}: {describe_error(exc)}"):
        pool.clear_idle()
    return True
