"""PostgreSQL that answers but cannot take Kindler's writes (kindler/db/failover/monitor.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.conf import settings

from kindler.db.failover.monitor import State, monitor, probe_postgres
from tests.conftest import BOTH
from tests.faults import execute
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)

READ_ONLY = "PostgreSQL is read-only (default_transaction_read_only is on)"
NOT_MIGRATED = "PostgreSQL is not migrated: run `manage.py migrate`"


@pytest.fixture
def frozen_monitor(pg: PostgresServer) -> Iterator[PostgresServer]:
    """No probing thread: only check_now() switches the state."""
    monitor.stop()
    yield pg
    monitor.reset()


@pytest.fixture
def read_only_postgres(frozen_monitor: PostgresServer) -> Iterator[Callable[[], None]]:
    """Make Kindler's database read-only for new sessions; yield what makes it writable again."""
    name = settings.DATABASES["postgres"]["NAME"]

    def make_writable() -> None:
        execute(frozen_monitor, f'ALTER DATABASE "{name}" RESET default_transaction_read_only')

    execute(frozen_monitor, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    yield make_writable
    make_writable()


@pytest.fixture
def unmigrated_postgres(
    frozen_monitor: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], None]]:
    """Point Kindler at an empty database on the same server; yield what points it back."""
    databases = settings.DATABASES["postgres"]
    migrated = databases["NAME"]
    empty = f"{migrated}_empty"
    frozen_monitor.create_database(empty)
    monkeypatch.setitem(databases, "NAME", empty)
    yield lambda: monkeypatch.setitem(databases, "NAME", migrated)
    monkeypatch.setitem(databases, "NAME", migrated)
    execute(frozen_monitor, f'DROP DATABASE "{empty}" WITH (FORCE)')


def test_the_probe_finds_a_read_only_server_reachable_but_unusable(
    read_only_postgres: Callable[[], None],
) -> None:
    probe = probe_postgres()
    assert (probe.reachable, probe.usable, probe.error) == (True, False, READ_ONLY)


def test_a_read_only_server_makes_the_instance_fall_back(
    read_only_postgres: Callable[[], None],
) -> None:
    snapshot = monitor.check_now()
    assert (snapshot.state, snapshot.active, snapshot.cause) == (
        State.FALLBACK,
        "sqlite",
        f"probe: {READ_ONLY}",
    )


def test_the_instance_returns_once_the_server_takes_writes_again(
    read_only_postgres: Callable[[], None],
) -> None:
    monitor.check_now()
    read_only_postgres()
    snapshot = monitor.check_now()
    assert (snapshot.state, snapshot.active) == (State.PRIMARY, "postgres")


def test_the_probe_finds_an_unmigrated_database_reachable_but_unusable(
    unmigrated_postgres: Callable[[], None],
) -> None:
    probe = probe_postgres()
    assert (probe.reachable, probe.usable, probe.error) == (True, False, NOT_MIGRATED)


def test_an_unmigrated_database_makes_the_instance_fall_back(
    unmigrated_postgres: Callable[[], None],
) -> None:
    snapshot = monitor.check_now()
    assert (snapshot.state, snapshot.active, snapshot.cause) == (
        State.FALLBACK,
        "sqlite",
        f"probe: {NOT_MIGRATED}",
    )


def test_the_instance_returns_once_pointed_at_a_migrated_database(
    unmigrated_postgres: Callable[[], None],
) -> None:
    monitor.check_now()
    unmigrated_postgres()
    snapshot = monitor.check_now()
    assert (snapshot.state, snapshot.active) == (State.PRIMARY, "postgres")
