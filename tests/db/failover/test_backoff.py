"""A PostgreSQL that answers but cannot take writes: named, waited out, no flapping."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings

from kindler.db.failover import monitor as monitoring
from kindler.db.failover.monitor import State, monitor, probe_postgres
from kindler.db.pool import probes
from tests.conftest import BOTH, wait_for
from tests.faults import SmallDisk, execute, held_open, read_only
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)

attempts: list[str] = []


def refuse_writes() -> None:
    """Recover on a session that cannot write, as a read-only server would answer."""
    attempts.append("refused")
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.execute("CREATE TABLE kindler_refused (x integer)")


def write_sqlite() -> None:
    """Recover with a write to the SQLite file, as the journal replay makes."""
    with connections["sqlite"].cursor() as cursor:
        cursor.execute("PRAGMA user_version = 7")


@pytest.fixture
def stopped_monitor() -> Iterator[None]:
    """A monitor started afresh, its probing thread stopped: the test makes every tick."""
    monitor.reset()
    monitor.active_alias()
    monitor.stop()
    attempts.clear()
    yield
    monitor.reset()


@override_settings(
    KINDLER_RECOVERY_HOOKS=["tests.db.failover.test_backoff.refuse_writes"],
    KINDLER_HEALTH_INTERVAL=0.1,
    KINDLER_RECOVERY_BACKOFF_MAX=0.3,
)
def test_failed_recoveries_wait_longer_each_time_up_to_the_maximum(
    stopped_monitor: None, caplog: pytest.LogCaptureFixture
) -> None:
    monitor.mark_down("test outage")

    def failures() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    with caplog.at_level(logging.ERROR, logger="kindler.db"):
        wait_for(lambda: monitor.check_now() and len(failures()) >= 4, 10)
    waits = [message.split(": ", 1)[0] for message in failures()[:4]]
    assert waits == [
        "Recovery failed, staying on SQLite (attempt 1, next in 0.1 s)",
        "Recovery failed, staying on SQLite (attempt 2, next in 0.2 s)",
        "Recovery failed, staying on SQLite (attempt 3, next in 0.3 s)",
        "Recovery failed, staying on SQLite (attempt 4, next in 0.3 s)",
    ]
    assert failures()[0].endswith(
        "PostgreSQL cannot take writes: it is read-only "
        "(cannot execute CREATE TABLE in a read-only transaction)"
    )


@override_settings(
    KINDLER_RECOVERY_HOOKS=["tests.db.failover.test_backoff.refuse_writes"],
    KINDLER_HEALTH_INTERVAL=5,
    KINDLER_RECOVERY_BACKOFF_MAX=30,
)
def test_no_recovery_is_tried_while_the_last_failure_is_waited_out(stopped_monitor: None) -> None:
    monitor.mark_down("test outage")
    monitor.check_now()
    tried = len(attempts)
    for _ in range(5):
        snapshot = monitor.check_now()
    assert (snapshot.state, len(attempts), tried) == (State.FALLBACK, tried, 3)


@pytest.fixture
def full_disk(pg: PostgresServer) -> Iterator[SmallDisk]:
    """The test database's temporary tablespace on a small filesystem, mounted not yet full."""
    reason = SmallDisk.unavailable()
    if reason is not None:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="kindler-tablespace-"))
    work.chmod(0o755)
    disk = SmallDisk(work / "disk", work / "disk.img", size_mb=8)
    disk.mount()
    disk.folder.chmod(0o755)
    space = disk.folder / "pg"
    space.mkdir()
    if pg.os_user:
        shutil.chown(space, pg.os_user)
    database = connections["postgres"].settings_dict["NAME"]
    execute(
        pg,
        f"CREATE TABLESPACE kindler_small LOCATION '{space}'",
        f"GRANT CREATE ON TABLESPACE kindler_small TO {pg.user}",
        f"ALTER DATABASE {database} SET temp_tablespaces = 'kindler_small'",
    )
    probes.close_all()
    yield disk
    disk.unfill()
    probes.close_all()
    execute(pg, f"ALTER DATABASE {database} RESET temp_tablespaces")
    time.sleep(0.2)
    # The checkpoint: a later crash recovery must not replay CREATE TABLESPACE
    # into a folder that is gone (the server would not start).
    execute(pg, "DROP TABLESPACE kindler_small", "CHECKPOINT")
    disk.unmount()
    shutil.rmtree(work, ignore_errors=True)


def test_the_probe_finds_a_full_disk_unusable_for_writes(full_disk: SmallDisk) -> None:
    full_disk.fill()
    checked, plain = probe_postgres(write_check=True), probe_postgres()
    assert (checked.reachable, checked.usable, plain.usable) == (True, False, True)
    assert str(checked.error).startswith("PostgreSQL cannot take writes: its disk is full (")
    assert str(checked.error).endswith("No space left on device)")


def test_a_full_disk_keeps_the_instance_on_sqlite_until_it_has_room(
    full_disk: SmallDisk, stopped_monitor: None
) -> None:
    monitor.mark_down("test outage")
    generation = len(monitor.snapshot().transitions)
    full_disk.fill()
    for _ in range(5):
        snapshot = monitor.check_now()
    assert (snapshot.state, len(snapshot.transitions)) == (State.FALLBACK, generation)
    assert snapshot.cause.startswith("probe: PostgreSQL cannot take writes: its disk is full (")
    full_disk.unfill()
    assert monitor.check_now().state is State.PRIMARY


def test_a_fall_back_made_while_a_probe_ran_without_writing_waits_for_one_that_writes(
    full_disk: SmallDisk, stopped_monitor: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert monitor.check_now().state is State.PRIMARY
    generation = len(monitor.snapshot().transitions)
    full_disk.fill()
    # On a primary the probe only reads; a request meets the full disk meanwhile.
    read_only_probe = probe_postgres

    def request_falls_back_meanwhile(**kwargs: Any) -> Any:
        found = read_only_probe(**kwargs)
        monitor.mark_down("request failed: No space left on device")
        return found

    monkeypatch.setattr(monitoring, "probe_postgres", request_falls_back_meanwhile)
    monitor.check_now()
    snapshot = monitor.check_now()
    monkeypatch.undo()
    made = [(t.source, t.target) for t in snapshot.transitions[generation:]]
    assert (snapshot.state, made) == (State.FALLBACK, [(State.PRIMARY, State.FALLBACK)])
    full_disk.unfill()
    assert monitor.check_now().state is State.PRIMARY


@pytest.fixture
def sqlite_held_open() -> Iterator[Path]:
    """The `sqlite` database's file, held open by another process; its version put back after."""
    path = Path(connections["sqlite"].settings_dict["NAME"])
    connections["sqlite"].close()
    with held_open(path):
        yield path
    with connections["sqlite"].cursor() as cursor:
        cursor.execute("PRAGMA user_version = 0")


@override_settings(
    KINDLER_RECOVERY_HOOKS=["tests.db.failover.test_backoff.write_sqlite"],
    KINDLER_HEALTH_INTERVAL=0.1,
    KINDLER_RECOVERY_BACKOFF_MAX=0.1,
)
def test_a_recovery_that_found_sqlite_read_only_opens_it_afresh_once_it_is_writable(
    stopped_monitor: None, sqlite_held_open: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor.mark_down("test outage")
    with caplog.at_level(logging.ERROR, logger="kindler.db"), read_only(sqlite_held_open):
        during = monitor.check_now().state
    failures = [
        r.getMessage().split(": ", 1)[1] for r in caplog.records if r.levelno == logging.ERROR
    ]
    # Once the failed recovery's wait is over, the next one finds the file writable.
    wait_for(lambda: monitor.check_now().state is State.PRIMARY, 10)
    with connections["sqlite"].cursor() as cursor:
        cursor.execute("PRAGMA user_version")
        (version,) = cursor.fetchone()
    assert (during, failures, version) == (
        State.RECOVERING,
        ["attempt to write a readonly database"],
        7,
    )
