"""A bounded pool of PostgreSQL connections per process, shared by all its threads.

Django keeps one connection per thread; with the pool (PG_POOL_MAX > 0) a
thread borrows a connection when it first queries and gives it back when
Django closes it (at the end of every request, CONN_MAX_AGE being 0), so the
threads of a process never hold more than PG_POOL_MAX connections between
them. A thread that finds them all in use waits up to PG_POOL_TIMEOUT
seconds, then gets PoolTimeout (answered as a 503, never an outage: the
server is up, this process is busy). Up to PG_POOL_MIN idle connections stay
open; idle ones beyond that close after PG_POOL_MAX_IDLE seconds.

Every figure is a prometheus-client metric, so the web server's workers each
report their own (kindler.db.status reads them back per process).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions as ext
from prometheus_client import Counter, Gauge

# A kept probe connection is replaced by a new one at least this often (seconds).
PROBE_MAX_AGE = 60.0

CONNECTIONS = Gauge(
    "kindler_db_pool_connections",
    "PostgreSQL connections of this process's pool: open, in_use, idle, and threads waiting.",
    ["alias", "state"],
    multiprocess_mode="liveall",
)
LIMITS = Gauge(
    "kindler_db_pool_limit",
    "The pool's bounds (PG_POOL_MIN, PG_POOL_MAX) in this process.",
    ["alias", "bound"],
    multiprocess_mode="liveall",
)
EVENTS = Counter(
    "kindler_db_pool_events",
    "Pool events per process: connections opened and closed, waits, timeouts.",
    ["alias", "pid", "event"],
)
WAIT_SECONDS = Counter(
    "kindler_db_pool_wait_seconds",
    "Time threads spent waiting for a pooled connection, per process.",
    ["alias", "pid"],
)
PROBES = Counter(
    "kindler_db_probe_connections_opened",
    "Connections the health monitor opened to probe PostgreSQL, per process.",
    ["pid"],
)
PROBES_OPEN = Gauge(
    "kindler_db_probe_connections_open",
    "Probe connections the health monitor keeps open now, per process.",
    multiprocess_mode="liveall",
)
EVENT_NAMES = ("opened", "closed", "waits", "timeouts")


class PoolTimeout(psycopg2.OperationalError):
    """Every pooled connection of this process stayed in use for PG_POOL_TIMEOUT seconds.

    A psycopg2 error, so Django raises it as its own OperationalError; the
    failover code tells it apart from an outage (kindler.db.failover.errors).
    """


@dataclass(frozen=True)
class PoolConfig:
    minimum: int
    maximum: int
    timeout: float
    max_idle: float

    @classmethod
    def from_settings(cls, settings_dict: dict[str, Any]) -> PoolConfig | None:
        """Return the pool settings of one DATABASES entry, or None when it has no pool."""
        pool = settings_dict.get("POOL") or {}
        maximum = int(pool.get("MAX", 0))
        if maximum <= 0:
            return None
        return cls(
            minimum=max(0, min(int(pool.get("MIN", 0)), maximum)),
            maximum=maximum,
            timeout=float(pool.get("TIMEOUT", 30.0)),
            max_idle=float(pool.get("MAX_IDLE", 60.0)),
        )


@dataclass
class _Idle:
    conn: Any
    since: float


class ConnectionPool:
    """The connections one alias may hold in this process, at most config.maximum."""

    def __init__(self, alias: str, config: PoolConfig) -> None:
        self.alias = alias
        self.config = config
        self._cond = threading.Condition()
        self._idle: list[_Idle] = []
        self._open = 0
        self._waiting = 0
        # id() of every connection this pool opened and has not closed.
        self._mine: set[int] = set()
        # Replaced by a pool of other settings: connections still in use close when given back.
        self.retired = False
        pid = str(os.getpid())
        self._events = {name: EVENTS.labels(alias, pid, name) for name in EVENT_NAMES}
        self._wait_seconds = WAIT_SECONDS.labels(alias, pid)
        # Looked up once: a labels() call costs more than the pool's own work.
        states = ("open", "in_use", "idle", "waiting")
        self._gauges = {state: CONNECTIONS.labels(alias, state) for state in states}
        LIMITS.labels(alias, "min").set(config.minimum)
        LIMITS.labels(alias, "max").set(config.maximum)
        self._publish()

    def acquire(self, connect: Callable[[], Any]) -> Any:
        """Return an idle connection, a new one (connect()) below the bound, or wait for one."""
        deadline: float | None = None
        while True:
            with self._cond:
                entry = self._take_idle()
                if entry is None and self._open < self.config.maximum:
                    self._open += 1
                    self._publish()
                    break
                if entry is None:
                    deadline = self._wait(deadline)
                    continue
            if self._usable(entry):
                return entry.conn
            self._discard(entry.conn)
        try:
            conn = connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._publish()
                self._cond.notify()
            raise
        with self._cond:
            self._mine.add(id(conn))
        self._events["opened"].inc()
        return conn

    def release(self, conn: Any, reusable: bool = True) -> None:
        """Take conn back; close it instead when it failed, is broken or mid-transaction."""
        with self._cond:
            mine = id(conn) in self._mine
        if not mine:
            # Borrowed from a pool this one replaced: not counted here.
            with contextlib.suppress(Exception):
                conn.close()
            return
        if not reusable or self.retired or not _clean(conn):
            self._discard(conn)
            return
        with self._cond:
            self._idle.append(_Idle(conn, time.monotonic()))
            stale = self._stale()
            self._publish()
            self._cond.notify()
        for entry in stale:
            self._discard(entry.conn)

    def clear(self) -> int:
        """Close every idle connection (PostgreSQL was lost); return how many."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._publish()
        for entry in idle:
            self._discard(entry.conn)
        return len(idle)

    def prune(self) -> int:
        """Close idle connections beyond the minimum that idled too long; return how many."""
        with self._cond:
            stale = self._stale()
            self._publish()
        for entry in stale:
            self._discard(entry.conn)
        return len(stale)

    def forget(self) -> None:
        """Drop every connection without closing it: they belong to the parent of a fork."""
        with self._cond:
            self.retired = True
            self._idle = []
            self._mine = set()
            self._open = 0

    def counts(self) -> dict[str, int]:
        """Return open, in use, idle and waiting, as this instant."""
        with self._cond:
            return self._counts()

    def _counts(self) -> dict[str, int]:
        idle = len(self._idle)
        return {
            "open": self._open,
            "in_use": self._open - idle,
            "idle": idle,
            "waiting": self._waiting,
        }

    def _publish(self) -> None:
        if self.retired:
            # The alias's figures belong to the pool that replaced this one.
            return
        for name, value in self._counts().items():
            self._gauges[name].set(value)

    def _take_idle(self) -> _Idle | None:
        # Most recently used first: the others age out beyond the minimum.
        if not self._idle:
            return None
        entry = self._idle.pop()
        self._publish()
        return entry

    def _wait(self, deadline: float | None) -> float:
        now = time.monotonic()
        if deadline is None:
            deadline = now + self.config.timeout
            self._events["waits"].inc()
        remaining = deadline - now
        if remaining <= 0:
            self._events["timeouts"].inc()
            raise PoolTimeout(
                f"all {self.config.maximum} PostgreSQL connections of this process stayed in use "
                f"for {self.config.timeout:g} s (PG_POOL_MAX, PG_POOL_TIMEOUT)"
            )
        self._waiting += 1
        self._publish()
        try:
            self._cond.wait(remaining)
        finally:
            self._waiting -= 1
            self._wait_seconds.inc(time.monotonic() - now)
            self._publish()
        return deadline

    def _stale(self) -> list[_Idle]:
        # Oldest first in the list: those beyond the minimum that idled too long go.
        now = time.monotonic()
        spare = len(self._idle) - self.config.minimum
        stale = []
        while spare > 0 and self._idle and now - self._idle[0].since >= self.config.max_idle:
            stale.append(self._idle.pop(0))
            spare -= 1
        return stale

    def _usable(self, entry: _Idle) -> bool:
        # Checked each time it is handed out: PostgreSQL may have restarted, or
        # ended this backend, while the connection sat idle, and a dead
        # connection would make the request look like an outage.
        return _alive(entry.conn)

    def _discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()
        self._events["closed"].inc()
        with self._cond:
            self._mine.discard(id(conn))
            self._open -= 1
            self._publish()
            self._cond.notify()


def _alive(conn: Any) -> bool:
    """Return True unless the server has ended conn while it was idle.

    Costs no round trip, unlike a SELECT 1 on every hand-out: an idle
    connection has nothing to read unless the server closed it, and a
    backend that ends (a restart, pg_terminate_backend, the server killed,
    a proxy dropping it) sends its FATAL message or end of file first, so
    the socket turns readable. Kindler never LISTENs, so no
    notification can arrive on an idle connection instead. A server that
    merely stopped answering (paused, cut off) is caught by the query's own
    deadline (kindler.db.failover.timeouts), as a SELECT 1 would be.
    """
    if conn.closed:
        return False
    try:
        # poll, not select: a process with over 1,024 files open is fine too.
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        ready = poller.poll(0)
    except (OSError, ValueError, psycopg2.Error):
        return False
    return not ready


def _clean(conn: Any) -> bool:
    """Return True when conn may serve another thread: open and outside any transaction."""
    if conn.closed:
        return False
    status = conn.info.transaction_status
    if status in (ext.TRANSACTION_STATUS_INTRANS, ext.TRANSACTION_STATUS_INERROR):
        try:
            if conn.autocommit:
                # Kindler's backend began it with a statement (kindler.db.backends):
                # the driver's rollback() would send nothing.
                with conn.cursor() as cursor:
                    cursor.execute("ROLLBACK")
            else:
                conn.rollback()
        except psycopg2.Error:
            return False
        status = conn.info.transaction_status
    return bool(status == ext.TRANSACTION_STATUS_IDLE)


_lock = threading.Lock()
_pools: dict[str, ConnectionPool] = {}
_pid = os.getpid()


def pool_for(alias: str, settings_dict: dict[str, Any]) -> ConnectionPool | None:
    """Return this process's pool for alias (made on first use), or None when it has none."""
    global _pid
    config = PoolConfig.from_settings(settings_dict)
    with _lock:
        if _pid != os.getpid():
            # A forked child: the parent's connections are not ours to use or close.
            for pool in _pools.values():
                pool.forget()
            _pools.clear()
            _pid = os.getpid()
        current = _pools.get(alias)
        if current is not None and current.config == config:
            return current
        if current is not None:
            # The settings changed (tests): the old pool's connections go.
            current.retired = True
            current.clear()
            del _pools[alias]
        if config is None:
            return None
        current = _pools[alias] = ConnectionPool(alias, config)
        return current


def existing_pools() -> list[ConnectionPool]:
    """Return the pools this process has made so far."""
    with _lock:
        return list(_pools.values()) if _pid == os.getpid() else []


def clear_idle() -> int:
    """Close every idle pooled connection of this process; return how many."""
    return sum(pool.clear() for pool in existing_pools())


def prune_idle() -> int:
    """Close idle pooled connections beyond each pool's minimum that idled too long."""
    return sum(pool.prune() for pool in existing_pools())


class ProbeConnections:
    """The one connection per PostgreSQL server the health probes reuse while it stays healthy.

    A new PostgreSQL connection is a backend fork: probing on a fresh one
    every second, in every instance, costs the server more than the probe
    is worth. A kept connection is dropped after any failure or unhealthy
    answer, and replaced at least every PROBE_MAX_AGE seconds, because a
    postmaster that accepts no new connections (paused, or out of slots)
    is only seen by connecting anew.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # address -> (connection, time.monotonic() it was opened, pid that opened it)
        self._kept: dict[str, tuple[Any, float, int]] = {}
        self._opened: dict[int, float] = {}

    def take(self, address: str, connect: Callable[[], Any], reuse: bool = True) -> Any:
        """Return the kept connection to address if young enough (and reuse), else connect()'s."""
        with self._lock:
            kept = self._kept.pop(address, None)
        if kept is not None:
            conn, opened_at, pid = kept
            if pid == os.getpid():
                young = time.monotonic() - opened_at < PROBE_MAX_AGE
                if reuse and young and not conn.closed:
                    self._opened[id(conn)] = opened_at
                    return conn
                self.discard(conn)
        conn = connect()
        self._opened[id(conn)] = time.monotonic()
        PROBES.labels(str(os.getpid())).inc()
        PROBES_OPEN.inc()
        return conn

    def give_back(self, address: str, conn: Any, healthy: bool) -> None:
        """Keep conn for the next probe when the server was healthy; close it otherwise."""
        opened_at = self._opened.pop(id(conn), time.monotonic())
        if not healthy or conn.closed:
            self.discard(conn)
            return
        with self._lock:
            # Two probes of one server at once (a check beside the thread's):
            # keep one connection, close the other.
            spare = self._kept.get(address)
            self._kept[address] = (conn, opened_at, os.getpid())
        if spare is not None and spare[2] == os.getpid():
            self.discard(spare[0])

    def discard(self, conn: Any) -> None:
        """Close a probe connection, broken or not."""
        self._opened.pop(id(conn), None)
        with contextlib.suppress(Exception):
            conn.close()
        PROBES_OPEN.dec()

    def close_all(self) -> None:
        """Close every kept probe connection of this process."""
        with self._lock:
            kept, self._kept = self._kept, {}
        for conn, _, pid in kept.values():
            # A forked child leaves its parent's connections alone.
            if pid == os.getpid():
                self.discard(conn)


probes = ProbeConnections()


def close_everything_idle() -> None:
    """Close every idle pooled connection and every kept probe connection of this process."""
    clear_idle()
    probes.close_all()
