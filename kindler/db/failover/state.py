"""One database state per instance, shared by all its processes through a file beside SQLite.

An instance is every process that shares one SQLite file: the web server's
workers, the reconciler and manage.py commands. They must agree on which
database is active, or they write the same rows to both and make conflicts
with themselves. So no process keeps a state of its own: each one asks this
module, which reads a small JSON file next to the SQLite file.

Why a file and not a row in SQLite or shared memory:
- Reading costs one stat() while the file is unchanged (the parsed copy is
  kept per process, keyed on inode and modification time), so every request
  and every unpinned query can ask instead of guessing.
- A switch is a compare-and-set under an flock on the lock file, written to
  a temporary file and renamed over the old one: two processes never both
  win, and a reader never sees half a file.
- It stays writable when the SQLite file is not: a file locked by another
  program, a full disk for the database's folder only, or a read-only
  database must still let the instance say that it fell back and why.

Going back to PostgreSQL happens once, in promote(): inside one SQLite write
transaction (BEGIN IMMEDIATE takes the write lock every SQLite writer needs)
the caller drains what is left of the journal, then the state becomes primary,
then the transaction commits. A writer that was waiting for the lock finds
the state primary and goes to PostgreSQL instead (the middleware checks, and
the journal trigger refuses the write otherwise), so no process writes to
SQLite after the switch and every change reaches PostgreSQL in the order it
was acknowledged.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.dispatch import Signal

from kindler.db import SQLITE

# Sent with transition=Transition by the process that made a switch.
switched = Signal()
# Sent with move=HostMove by the process that saw the primary on another listed server.
host_moved = Signal()


class State(StrEnum):
    PRIMARY = "primary"
    FALLBACK = "fallback"
    RECOVERING = "recovering"
    # No PostgreSQL takes writes and the SQLite fallback is off (KINDLER_FALLBACK=off).
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Shared:
    """The instance's state as the state file holds it."""

    state: State
    since: datetime
    cause: str
    generation: int
    # The listed PostgreSQL server last seen taking writes, and since when.
    host: str | None = None
    host_since: datetime | None = None


@dataclass(frozen=True)
class Transition:
    at: datetime
    source: State
    target: State
    cause: str
    seconds_in_source: float


@dataclass(frozen=True)
class HostMove:
    """The primary moved to another listed server (a standby was promoted)."""

    at: datetime
    state: State
    source: str
    target: str
    seconds_on_source: float

    @property
    def cause(self) -> str:
        return f"primary moved from {self.source} to {self.target}"


class StateFileError(OSError):
    """The state file cannot be written (full disk, read-only folder)."""


_cache_lock = threading.Lock()
_cache: dict[str, tuple[tuple[int, int, int], Shared]] = {}


def base_path() -> Path:
    """Return the SQLite file's path; the state files are named after it."""
    return Path(str(settings.DATABASES[SQLITE]["NAME"]))


@functools.lru_cache(maxsize=64)
def _beside(sqlite_name: str, suffix: str) -> Path:
    # Every request reads the state file: building its Path each time cost
    # more than the stat. Keyed on the setting, which tests change.
    return Path(sqlite_name + suffix)


def state_path() -> Path:
    return _beside(str(settings.DATABASES[SQLITE]["NAME"]), ".state")


def lock_path() -> Path:
    return _beside(str(settings.DATABASES[SQLITE]["NAME"]), ".lock")


def promoting_path() -> Path:
    return _beside(str(settings.DATABASES[SQLITE]["NAME"]), ".promoting")


def promotion_pending() -> bool:
    """Return True while a switch back to PostgreSQL waits for SQLite's write lock."""
    return os.path.exists(promoting_path())


def wait_for_promotion(seconds: float) -> None:
    """Wait (at most seconds) for a pending switch back to PostgreSQL to end.

    Writers step aside this way: SQLite's busy handler is not fair, and a
    steady stream of writers could otherwise keep the switch waiting.
    """
    deadline = time.monotonic() + seconds
    while promotion_pending() and time.monotonic() < deadline:
        time.sleep(0.01)


def read() -> Shared | None:
    """Return the instance's state, or None before any process has set it."""
    path = state_path()
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        shared = Shared(
            state=State(data["state"]),
            since=datetime.fromisoformat(data["since"]),
            cause=str(data.get("cause", "")),
            generation=int(data.get("generation", 0)),
            host=data.get("host"),
            host_since=(
                datetime.fromisoformat(data["host_since"]) if data.get("host_since") else None
            ),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # Never half-written (renamed into place); a file edited by hand
        # that no longer parses counts as no state: the monitor sets one.
        return None
    with _cache_lock:
        _cache[str(path)] = (key, shared)
    return shared


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    path = lock_path()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(shared: Shared) -> None:
    path = state_path()
    spare = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
    data = {
        "state": str(shared.state),
        "since": shared.since.isoformat(),
        "cause": shared.cause,
        "generation": shared.generation,
        "host": shared.host,
        "host_since": shared.host_since.isoformat() if shared.host_since else None,
    }
    try:
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(spare, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            spare.unlink()
        raise StateFileError(exc.errno, f"cannot write {path}: {exc.strerror}") from exc


def switch(expected: Iterable[State] | None, target: State, cause: str) -> Transition | None:
    """Set the state to target if it is one of expected (None: only while unset).

    Return the transition made, or None when the state was not as expected
    (another process switched first) or already target.
    """
    allowed = None if expected is None else frozenset(expected)
    with _locked():
        current = read()
        if current is not None and current.state is target:
            return None
        if allowed is None and current is not None:
            return None
        if allowed is not None and (current is None or current.state not in allowed):
            return None
        now = datetime.now(UTC)
        _write(
            Shared(
                state=target,
                since=now,
                cause=cause,
                generation=(current.generation + 1) if current else 1,
                host=current.host if current else None,
                host_since=current.host_since if current else None,
            )
        )
    source = current.state if current else State.FALLBACK
    elapsed = (now - current.since).total_seconds() if current else 0.0
    transition = Transition(now, source, target, cause, max(elapsed, 0.0))
    # send_robust: a failing receiver must never stop the instance switching.
    switched.send_robust(sender=State, transition=transition)
    return transition


def explain(current: State, cause: str) -> bool:
    """Replace the cause of the state while it is still current; return whether it changed.

    For a reason that changed during one outage (unreachable, then a full
    disk): no switch, no new generation, same since.
    """
    with _locked():
        shared = read()
        if shared is None or shared.state is not current or shared.cause == cause:
            return False
        _write(replace(shared, cause=cause))
    return True


def move_host(address: str) -> HostMove | None:
    """Record address as the server taking writes; return the move when it was another one.

    The first server an instance sees is recorded without a move.
    """
    with _locked():
        current = read()
        if current is None or current.host == address:
            return None
        now = datetime.now(UTC)
        _write(replace(current, host=address, host_since=now))
    if current.host is None:
        return None
    elapsed = (now - current.host_since).total_seconds() if current.host_since else 0.0
    move = HostMove(now, current.state, current.host, address, max(elapsed, 0.0))
    host_moved.send_robust(sender=State, move=move)
    return move


def initialise(target: State, cause: str) -> Shared:
    """Set the first state of this instance unless another process already did; return it."""
    if read() is None:
        switch(None, target, cause)
    shared = read()
    if shared is None:
        raise StateFileError(0, f"cannot read back {state_path()}")
    return shared


def promote(drain: Callable[[], None], cause: str) -> Transition | None:
    """Drain what is left, then switch recovering -> primary, under SQLite's write lock.

    Returns the transition, or None when the state was no longer recovering
    (PostgreSQL failed again meanwhile); the drained changes are in
    PostgreSQL either way, recorded so they are never applied twice.
    """
    marker = promoting_path()
    with contextlib.suppress(OSError):
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))
    try:
        with transaction.atomic(using=SQLITE):
            drain()
            return switch({State.RECOVERING}, State.PRIMARY, cause)
    finally:
        with contextlib.suppress(OSError):
            marker.unlink()
