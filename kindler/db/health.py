"""The per-process health monitor that decides which database is active."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import psycopg2
from django.conf import settings
from django.db import connections
from django.dispatch import Signal
from django.utils.module_loading import import_string

from kindler.db import POSTGRES, SQLITE
from kindler.db.errors import describe
from kindler.db.routing import postgres_configured

logger = logging.getLogger("kindler.db")

SWITCH_HISTORY = 50
# Sent with transition=Transition on every state change (kindler.db.stats counts them).
switched = Signal()


class State(StrEnum):
    PRIMARY = "primary"
    FALLBACK = "fallback"
    RECOVERING = "recovering"


@dataclass(frozen=True)
class Probe:
    reachable: bool
    latency_ms: float | None
    error: str | None
    at: datetime


@dataclass(frozen=True)
class Transition:
    at: datetime
    source: State
    target: State
    cause: str
    seconds_in_source: float


@dataclass(frozen=True)
class Snapshot:
    active: str
    state: State
    since: datetime
    configured: bool
    probe: Probe | None
    transitions: tuple[Transition, ...] = field(default_factory=tuple)


def probe_postgres() -> Probe:
    """Open a fresh connection to PostgreSQL and run SELECT 1 on it."""
    started = time.monotonic()
    at = datetime.now(UTC)
    db = settings.DATABASES[POSTGRES]
    options = db.get("OPTIONS", {})
    try:
        # A fresh connection each time: a paused or saturated postmaster
        # refuses new connections long before established ones notice.
        conn = psycopg2.connect(
            host=db["HOST"],
            port=db["PORT"],
            dbname=db["NAME"],
            user=db["USER"],
            password=db["PASSWORD"],
            connect_timeout=max(1, round(settings.PG_CONNECT_TIMEOUT)),
            sslmode=options.get("sslmode", "prefer"),
            application_name="kindler-health",
            options=f"-c statement_timeout={int(settings.PG_CONNECT_TIMEOUT * 1000)}",
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        finally:
            conn.close()
    except psycopg2.Error as exc:
        return Probe(False, None, describe(exc), at)
    return Probe(True, round((time.monotonic() - started) * 1000, 2), None, at)


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


class HealthMonitor:
    """Probe PostgreSQL off the request path and keep the active alias."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._pid: int | None = None
        self._state = State.FALLBACK
        self._since = datetime.now(UTC)
        self._since_monotonic = time.monotonic()
        self._probe: Probe | None = None
        self._transitions: deque[Transition] = deque(maxlen=SWITCH_HISTORY)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mirror_thread: threading.Thread | None = None

    def active_alias(self) -> str:
        """Return the alias every query should use now."""
        self._ensure_started()
        return self._active()

    def snapshot(self) -> Snapshot:
        """Return the state, since when, and the last probe, for status pages."""
        self._ensure_started()
        with self._lock:
            return Snapshot(
                active=self._active(),
                state=self._state,
                since=self._since,
                configured=postgres_configured(),
                probe=self._probe,
                transitions=tuple(self._transitions),
            )

    def down_since(self) -> float | None:
        """Return when (time.monotonic) PostgreSQL was declared down, if it is now."""
        if self._pid != os.getpid() or self._state is not State.FALLBACK:
            return None
        return self._since_monotonic

    def mark_down(self, cause: str) -> None:
        """Switch to SQLite at once: a request just lost its PostgreSQL connection."""
        self._ensure_started()
        with self._lock:
            if self._state is not State.FALLBACK:
                self._switch(State.FALLBACK, cause)
        self._wake.set()

    def check_now(self) -> Snapshot:
        """Probe PostgreSQL now and apply the result, as the thread would."""
        self._ensure_started()
        self._check()
        return self.snapshot()

    def stop(self) -> None:
        """Stop the probing thread (tests and clean shutdown)."""
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._mirror_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=10)

    def reset(self) -> None:
        """Forget everything, as a freshly forked process would."""
        self.stop()
        with self._lock:
            self._pid = None

    def _active(self) -> str:
        if self._state is State.PRIMARY and postgres_configured():
            return POSTGRES
        return SQLITE

    def _ensure_started(self) -> None:
        # Keyed on the pid, so a process forked by gunicorn after this module
        # was imported starts its own thread instead of inheriting a dead one.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            self._wake = threading.Event()
            self._transitions.clear()
            self._probe = None
            self._start_up()
            if postgres_configured():
                self._thread = threading.Thread(
                    target=self._run, name="kindler-health", daemon=True
                )
                self._thread.start()
                self._mirror_thread = threading.Thread(
                    target=self._mirror_loop, name="kindler-mirror", daemon=True
                )
                self._mirror_thread.start()

    def _start_up(self) -> None:
        now = datetime.now(UTC)
        self._since, self._since_monotonic = now, time.monotonic()
        if not postgres_configured():
            self._state = State.PRIMARY
            logger.info("PostgreSQL not configured (PG_HOST is unset)")
            logger.info("Using SQLite backend (embedded)")
            return
        # The first probe runs in the caller so the first query already goes
        # to the right database and the log says which one it is.
        probe = probe_postgres()
        self._probe = probe
        if probe.reachable:
            self._state = State.PRIMARY
            logger.info("Using PostgreSQL backend (primary)")
        else:
            self._state = State.FALLBACK
            logger.warning("PostgreSQL connection failed: %s", probe.error)
            logger.warning("Using SQLite backend (fallback)")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=settings.KINDLER_HEALTH_INTERVAL)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._check()
            except Exception:
                # The thread must outlive any surprise, or routing freezes.
                logger.exception("Health check failed unexpectedly")

    def _check(self) -> None:
        if not postgres_configured():
            return
        probe = probe_postgres()
        with self._lock:
            self._probe = probe
            if not probe.reachable:
                if self._state is not State.FALLBACK:
                    self._switch(State.FALLBACK, f"probe failed: {probe.error}")
                return
            if self._state is State.FALLBACK:
                self._switch(State.RECOVERING, "PostgreSQL answers again")
            if self._state is not State.RECOVERING:
                return
        self._recover()

    def _recover(self) -> None:
        # Outside the lock: replaying a journal can take a while and requests
        # must keep being routed (to SQLite) meanwhile.
        try:
            # This thread outlives the server it talks to: a connection kept
            # from before the outage is dead, so start each recovery afresh.
            close_thread_connections()
            run_recovery_hooks()
        except Exception as exc:
            logger.error("Recovery failed, staying on SQLite: %s", describe(exc))
            return
        finally:
            close_thread_connections()
        with self._lock:
            if self._state is not State.RECOVERING:
                return
            self._switch(State.PRIMARY, "recovery finished")
        # Requests already pinned to SQLite may still commit there after the
        # switch; their changes are journaled (see kindler.db.journal) and
        # carried over now, and by every mirror tick while the journal is
        # not empty, so none stays behind.
        self._sync(with_mirror=False)

    def _mirror_loop(self) -> None:
        while not self._stop.is_set():
            interval = float(settings.KINDLER_MIRROR_INTERVAL)
            if interval > 0 and self._state is State.PRIMARY:
                self._sync(with_mirror=True)
                # This thread's connections are its own: do not keep them open.
                close_thread_connections()
            self._stop.wait(interval if interval > 0 else 1.0)

    def _sync(self, *, with_mirror: bool) -> None:
        """Replay what is left in the journal, then (if asked) mirror PostgreSQL."""
        from kindler.db import sync

        try:
            sync.drain_and_mirror(with_mirror=with_mirror)
        except Exception as exc:
            # Recorded for the status pages by the run itself.
            logger.warning("Sync with PostgreSQL failed: %s", describe(exc))

    def _switch(self, target: State, cause: str) -> None:
        now, now_monotonic = datetime.now(UTC), time.monotonic()
        elapsed = now_monotonic - self._since_monotonic
        transition = Transition(now, self._state, target, cause, elapsed)
        self._transitions.append(transition)
        # send_robust: a failing receiver must never stop routing from switching.
        switched.send_robust(sender=HealthMonitor, transition=transition)
        logger.warning(
            "Database state %s -> %s after %.3f s: %s (active: %s)",
            self._state,
            target,
            elapsed,
            cause,
            POSTGRES if target is State.PRIMARY else SQLITE,
        )
        self._state, self._since, self._since_monotonic = target, now, now_monotonic


monitor = HealthMonitor()
