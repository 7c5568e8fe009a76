"""The reconciler registry: which reconcilers run, on which Docker host, with what.

Each reconciler process writes one Registration row: its host name
(KINDLER_HOST_NAME), process id, Kindler version, the providers it found on
its PATH with their versions, when it started, and a heartbeat every
KINDLER_HEARTBEAT_INTERVAL seconds from a thread of its own, so a long
k3d create never makes it look dead. One silent for three intervals is no
longer live. The row also keeps the reconciler's last observation of its
providers, which /api/clusters/NAME/status answers from.

Rows are written where writes go now (see Registration for why they are not
synced): after a switch the next heartbeat registers the process again on
the database that takes writes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections, router
from django.utils import timezone

from clusters import queries
from clusters.drivers import ClusterStatus, driver_for
from clusters.drivers.base import Command, run
from clusters.models import Registration
from clusters.validators import DNS_LABEL
from kindler import __version__
from kindler.db.failover.errors import describe_error
from kindler.db.failover.monitor import report_outage
from kindler.db.failover.retry import on_live_connection
from kindler.sections import Section

logger = logging.getLogger("kindler.reconciler")

# What a pass's listing gives: provider -> clusters by name, or why it could not list.
Observation = Mapping[str, Mapping[str, ClusterStatus] | str]
LIVE_INTERVALS = 3
# Rows of reconcilers gone this long are removed when another registers.
FORGET_AFTER = timedelta(days=1)
VERSION_TIMEOUT_SECONDS = 10.0
VERSION = re.compile(r"v?\d+\.\d+(?:\.\d+)?\S*")
INSTALL_PAGES = {
    "k3d": "https://k3d.io/#installation",
    "kind": "https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
}


def heartbeat_interval() -> float:
    return float(settings.KINDLER_HEARTBEAT_INTERVAL)


def live_since() -> datetime:
    """Return the oldest heartbeat that still counts as live."""
    return timezone.now() - timedelta(seconds=LIVE_INTERVALS * heartbeat_interval())


# Within one_reading(), the registrations as first read; None until then.
_reading: ContextVar[list[Registration] | None] = ContextVar("registry_reading", default=None)
_reading_open: ContextVar[bool] = ContextVar("registry_reading_open", default=False)


@contextmanager
def one_reading() -> Iterator[None]:
    """Read the registry once for everything one request decides from it.

    A create chooses the host, checks the provider and words its answer from
    the same registry rows: one SELECT, not three. Heartbeats are seconds
    apart, so the rows do not change meaningfully within a request.
    """
    opened = _reading_open.set(True)
    cached = _reading.set(None)
    try:
        yield
    finally:
        _reading.reset(cached)
        _reading_open.reset(opened)


def _registrations() -> list[Registration]:
    """Return every remembered registration (live or not), read where reads go now.

    One row per reconciler started within FORGET_AFTER, so reading them all
    costs no more than reading the live ones, and answers both questions
    placement asks. What each last observed is left out: it lists every
    cluster of its host, and only last_observation() needs it.
    """
    cached = _reading.get()
    if cached is not None:
        return cached
    rows = queries.registrations()
    if _reading_open.get():
        _reading.set(rows)
    return rows


def live_registrations() -> list[Registration]:
    """Return the live reconcilers, by host, read where reads go now."""
    since = live_since()
    return [entry for entry in _registrations() if entry.last_seen >= since]


def live_on(host: str) -> list[Registration]:
    """Return the live reconcilers of one Docker host."""
    return [entry for entry in live_registrations() if entry.host == host]


def known_hosts() -> list[str]:
    """Return every host a reconciler ever registered from (still remembered), sorted."""
    return sorted({entry.host for entry in _registrations()})


def install_hint(provider: str) -> str:
    """Return where to read how to install a provider's CLI."""
    return f"install it: {INSTALL_PAGES.get(provider, provider)}"


def first_run_advice() -> str | None:
    """Return what to install when neither k3d nor kind is on this process's PATH."""
    if any(shutil.which(driver_for(provider).binary) for provider in INSTALL_PAGES):
        return None
    pages = ", ".join(f"{provider}: {page}" for provider, page in INSTALL_PAGES.items())
    return (
        "Neither k3d nor kind is on PATH, so this machine's reconciler can create no "
        f"cluster. Install Docker and one of them ({pages}), or run the reconciler on a "
        "machine that has them."
    )


def provider_version(provider: str) -> str | None:
    """Return the version a provider's CLI reports, or None when it is not on PATH."""
    binary = driver_for(provider).binary
    if shutil.which(binary) is None:
        return None
    result = run(Command((binary, "version")), timeout=VERSION_TIMEOUT_SECONDS, merge_stderr=False)
    found = VERSION.search(result.output) if result.exit_code == 0 else None
    return found.group(0) if found else "unknown"


def find_providers() -> dict[str, str]:
    """Return the providers whose CLI is on this process's PATH, with their versions."""
    found = {}
    for provider in ("k3d", "kind"):
        version = provider_version(provider)
        if version is None:
            logger.warning("%s not found on PATH; %s", provider, install_hint(provider))
        else:
            found[provider] = version
    return found


def observation_data(observed: Observation) -> dict[str, Any]:
    """Return provider listings as the JSON a registration keeps."""
    data: dict[str, Any] = {}
    for provider, listing in observed.items():
        if isinstance(listing, str):
            data[provider] = {"error": listing}
        else:
            # Only names a cluster can have: a provider may list others (made by
            # hand, or garbled), and text JSON cannot hold (a lone surrogate)
            # would make the whole observation unstorable.
            data[provider] = {
                "clusters": {
                    name: [status.state, status.nodes_ready, status.nodes_total]
                    for name, status in listing.items()
                    if DNS_LABEL.fullmatch(name)
                }
            }
    return data


class Heartbeat:
    """Register this process as a reconciler and keep its registration fresh."""

    def __init__(self, host: str | None = None, providers: dict[str, str] | None = None) -> None:
        self.key = uuid.uuid4()
        self.host = host or str(settings.KINDLER_HOST_NAME)
        self.providers = find_providers() if providers is None else providers
        self.started_at = timezone.now()
        self.stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def beat(self) -> bool:
        """Write this reconciler's heartbeat where writes go now; False when none took it."""
        now = timezone.now()
        with self._lock:
            try:
                alias = router.db_for_write(Registration)
                on_live_connection(alias, lambda: self._write_beat(alias, now))
            except DatabaseError as exc:
                self._failed("heartbeat", exc)
                return False
            return True

    def _write_beat(self, alias: str, now: datetime) -> None:
        rows = Registration.objects.using(alias)
        if rows.filter(key=self.key).update(last_seen=now):
            return
        rows.filter(last_seen__lt=now - FORGET_AFTER).delete()
        rows.create(
            key=self.key,
            host=self.host,
            pid=os.getpid(),
            version=__version__,
            providers=self.providers,
            started_at=self.started_at,
            last_seen=now,
        )

    def record_observation(self, observed: Observation) -> None:
        """Keep what the providers listed just now (a heartbeat too), for the status API."""
        data = observation_data(observed)
        for _attempt in range(2):
            now = timezone.now()
            with self._lock:
                try:
                    alias = router.db_for_write(Registration)
                    rows = Registration.objects.using(alias).filter(key=self.key)
                    update = partial(rows.update, last_seen=now, observed=data, observed_at=now)
                    written = on_live_connection(alias, update)
                except DatabaseError as exc:
                    self._failed("observation", exc)
                    return
            # Not registered where writes go now (first pass, or after a switch).
            if written or not self.beat():
                return

    def _failed(self, what: str, exc: DatabaseError) -> None:
        if report_outage(exc, "reconciler"):
            logger.warning("PostgreSQL went away (%s); the next %s goes on", what, what)
        else:
            logger.error("Cannot write the reconciler %s: %s", what, describe_error(exc))

    def start(self) -> None:
        """Beat now and then every KINDLER_HEARTBEAT_INTERVAL seconds, from a thread."""
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="kindler-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.stopped.wait(heartbeat_interval()):
            # Drop connections a lost server left broken, as a request would.
            close_old_connections()
            self.beat()
        connections.close_all()

    def stop(self) -> None:
        """Stop beating; the registration stops being live three intervals later."""
        self.stopped.set()
        if self._thread is not None:
            self._thread.join()


@dataclass(frozen=True)
class Observed:
    """What a cluster's reconciler last saw of it, and how old that is."""

    state: str
    nodes_ready: int
    nodes_total: int
    observed_at: datetime | None
    error: str | None

    @property
    def age_seconds(self) -> float | None:
        if self.observed_at is None:
            return None
        return round((timezone.now() - self.observed_at).total_seconds(), 3)


def last_observation(name: str, host: str, provider: str) -> Observed:
    """Return the freshest observation of a cluster by its host's reconcilers."""
    latest = (
        Registration.objects.filter(host=host, observed_at__isnull=False)
        .order_by("-observed_at")
        .first()
    )
    if latest is None or latest.observed_at is None:
        return Observed(
            "unknown", 0, 0, None, f"No reconciler on {host} has observed its clusters yet."
        )
    listing = latest.observed.get(provider)
    if listing is None:
        return Observed(
            "unknown",
            0,
            0,
            latest.observed_at,
            f"The reconciler on {host} has not listed its {provider} clusters yet.",
        )
    if "error" in listing:
        return Observed("unknown", 0, 0, latest.observed_at, str(listing["error"]))
    state, ready, total = listing["clusters"].get(name, ["absent", 0, 0])
    return Observed(str(state), int(ready), int(total), latest.observed_at, None)


def registration_as_json(entry: Registration) -> dict[str, Any]:
    """Return one registration as JSON data."""
    return {
        "host": entry.host,
        "pid": entry.pid,
        "version": entry.version,
        "providers": entry.providers,
        "started_at": entry.started_at.isoformat(),
        "last_seen": entry.last_seen.isoformat(),
        "observed_at": entry.observed_at.isoformat() if entry.observed_at else None,
    }


def registration_line(entry: Registration) -> str:
    """Return one registration as a line of text."""
    providers = ", ".join(f"{name} {version}" for name, version in sorted(entry.providers.items()))
    ago = (timezone.now() - entry.last_seen).total_seconds()
    return (
        f"{entry.host} (pid {entry.pid}, Kindler {entry.version}): "
        f"{providers or 'no providers'}; seen {ago:.1f} s ago"
    )


def reconcilers_section() -> Section:
    """Return the live reconcilers as a status section (health, dbstatus, System page)."""
    live = live_registrations()
    data = [registration_as_json(entry) for entry in live]
    lines = tuple(registration_line(entry) for entry in live) or (
        "none live: start `scripts/manage reconcile` on each Docker host",
    )
    return Section("reconcilers", "Reconcilers", data, lines)
