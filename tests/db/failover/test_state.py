"""The instance's one database state, shared through a file (kindler/db/failover/state.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections

from clusters.models import Cluster
from kindler.db.failover import state
from kindler.db.failover.errors import is_switched_back
from kindler.db.failover.pinning import pinned_alias
from kindler.db.failover.state import Shared, State, Transition
from kindler.db.models import JournalEntry
from kindler.db.sync.journal import journal_suppressed
from tests.conftest import BOTH
from tests.factories import cluster_fields

on_both = pytest.mark.django_db(databases=BOTH, transaction=True)

READ_STATE = (
    "import django; django.setup(); "
    "from kindler.db.failover import state; "
    "shared = state.read(); "
    "print(shared.state, shared.generation, shared.cause)"
)


@pytest.fixture
def fresh_state(no_probes: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An instance no process has set a state for: its SQLite path in an empty folder."""
    monkeypatch.setitem(settings.DATABASES["sqlite"], "NAME", str(tmp_path / "kindler.db"))
    return state.base_path()


@pytest.fixture
def primary(fresh_state: Path) -> Shared:
    """An instance whose first state is primary."""
    state.switch(None, State.PRIMARY, "instance started")
    shared = state.read()
    assert shared is not None
    return shared


@pytest.fixture
def recovering(no_probes: None) -> Shared:
    """The test databases' instance, recovering (no probe finishes the recovery)."""
    state.switch({State.PRIMARY}, State.RECOVERING, "PostgreSQL answers again")
    shared = state.read()
    assert shared is not None
    return shared


def test_read_is_none_before_any_switch(fresh_state: Path) -> None:
    assert state.read() is None


def test_the_state_file_lies_beside_the_sqlite_file(fresh_state: Path) -> None:
    assert state.state_path() == fresh_state.with_name("kindler.db.state")


def test_the_first_switch_sets_generation_one(fresh_state: Path) -> None:
    transition = state.switch(None, State.PRIMARY, "instance started")
    assert transition is not None
    assert state.read() == Shared(State.PRIMARY, transition.at, "instance started", 1)


def test_the_first_switch_returns_its_transition(fresh_state: Path) -> None:
    transition = state.switch(None, State.FALLBACK, "instance started: refused")
    shared = state.read()
    assert shared is not None
    assert transition == Transition(
        shared.since, State.FALLBACK, State.FALLBACK, "instance started: refused", 0.0
    )


def test_a_switch_expecting_no_state_does_nothing_once_one_is_set(primary: Shared) -> None:
    assert state.switch(None, State.FALLBACK, "instance started") is None
    assert state.read() == primary


def test_a_switch_from_an_expected_state_increments_the_generation(primary: Shared) -> None:
    state.switch({State.PRIMARY, State.RECOVERING}, State.FALLBACK, "probe: refused")
    shared = state.read()
    assert shared is not None
    assert (shared.state, shared.cause, shared.generation) == (
        State.FALLBACK,
        "probe: refused",
        2,
    )


def test_a_switch_returns_the_time_spent_in_the_source_state(primary: Shared) -> None:
    transition = state.switch({State.PRIMARY}, State.FALLBACK, "probe: refused")
    assert transition is not None
    assert transition.seconds_in_source == (transition.at - primary.since).total_seconds()


def test_a_switch_from_an_unexpected_state_returns_none(primary: Shared) -> None:
    assert state.switch({State.RECOVERING}, State.PRIMARY, "recovery finished") is None
    assert state.read() == primary


def test_a_switch_to_the_current_state_returns_none(primary: Shared) -> None:
    assert state.switch({State.PRIMARY, State.FALLBACK}, State.PRIMARY, "again") is None
    assert state.read() == primary


def test_a_switch_expecting_a_state_does_nothing_while_none_is_set(fresh_state: Path) -> None:
    assert state.switch({State.FALLBACK}, State.RECOVERING, "PostgreSQL answers") is None
    assert state.read() is None


def test_a_switch_sends_its_transition(primary: Shared) -> None:
    received: list[Any] = []

    def receive(sender: Any, transition: Transition, **kwargs: Any) -> None:
        received.append(transition)

    state.switched.connect(receive)
    try:
        transition = state.switch({State.PRIMARY}, State.FALLBACK, "probe: refused")
    finally:
        state.switched.disconnect(receive)
    assert received == [transition]


def test_another_process_reads_the_state_this_one_switched_to(primary: Shared) -> None:
    state.switch({State.PRIMARY}, State.FALLBACK, "request failed: refused")
    child = subprocess.run(
        [sys.executable, "-c", READ_STATE],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "SQLITE_PATH": str(state.base_path()),
        },
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (child.returncode, child.stdout, child.stderr) == (
        0,
        "fallback 2 request failed: refused\n",
        "",
    )


def test_of_concurrent_switches_from_one_state_exactly_one_wins(primary: Shared) -> None:
    contenders = 8
    start = threading.Barrier(contenders)
    results: list[Transition | None] = [None] * contenders

    def contend(index: int) -> None:
        start.wait()
        results[index] = state.switch({State.PRIMARY}, State.FALLBACK, f"thread {index}")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [result for result in results if result is not None]
    shared = state.read()
    assert shared is not None
    assert (len(winners), shared.generation, shared.cause) == (1, 2, winners[0].cause)


@on_both
def test_promote_drains_inside_a_sqlite_transaction_before_the_switch(
    recovering: Shared,
) -> None:
    seen: list[tuple[bool, State | None]] = []

    def drain() -> None:
        shared = state.read()
        seen.append((connections["sqlite"].in_atomic_block, shared.state if shared else None))

    state.promote(drain, "recovery finished")
    assert seen == [(True, State.RECOVERING)]


@on_both
def test_writers_are_told_to_step_aside_only_while_a_promotion_runs(
    recovering: Shared,
) -> None:
    during: list[bool] = []
    state.promote(lambda: during.append(state.promotion_pending()), "recovery finished")
    assert (during, state.promotion_pending()) == ([True], False)


@on_both
def test_a_failed_promotion_leaves_no_marker(recovering: Shared) -> None:
    def drain() -> None:
        raise RuntimeError("PostgreSQL went away")

    with pytest.raises(RuntimeError):
        state.promote(drain, "recovery finished")
    assert state.promotion_pending() is False


@on_both
def test_promote_switches_recovering_to_primary(recovering: Shared) -> None:
    transition = state.promote(lambda: None, "recovery finished")
    shared = state.read()
    assert transition is not None
    assert (transition.source, transition.target, shared) == (
        State.RECOVERING,
        State.PRIMARY,
        Shared(
            State.PRIMARY,
            transition.at,
            "recovery finished",
            recovering.generation + 1,
            recovering.host,
            recovering.host_since,
        ),
    )


@on_both
def test_promote_returns_none_when_the_instance_fell_back_meanwhile(
    recovering: Shared,
) -> None:
    state.switch({State.RECOVERING}, State.FALLBACK, "probe: refused")
    assert state.promote(lambda: None, "recovery finished") is None
    shared = state.read()
    assert shared is not None
    assert shared.state is State.FALLBACK


@on_both
def test_a_failing_drain_rolls_back_and_stays_recovering(recovering: Shared) -> None:
    def drain() -> None:
        with journal_suppressed():
            Cluster.objects.using("sqlite").create(**cluster_fields(name="drained"))
        raise RuntimeError("journal entry 7 cannot be applied")

    with pytest.raises(RuntimeError):
        state.promote(drain, "recovery finished")
    assert (list(Cluster.objects.using("sqlite").all()), state.read()) == ([], recovering)


@on_both
def test_a_sqlite_writer_waiting_through_promote_is_refused_after_it(
    recovering: Shared,
) -> None:
    writing = threading.Event()
    failures: list[BaseException] = []

    def announce(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("INSERT"):
            writing.set()
        return execute(sql, params, many, context)

    def write() -> None:
        # Routed while the instance is still recovering: to SQLite.
        try:
            with connections["sqlite"].execute_wrapper(announce):
                Cluster.objects.create(**cluster_fields(name="late"))
        except DatabaseError as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    writer = threading.Thread(target=write)

    def drain() -> None:
        writer.start()
        assert writing.wait(10)
        # Long enough for the writer to be waiting for SQLite's write lock.
        time.sleep(0.2)

    state.promote(drain, "recovery finished")
    writer.join(timeout=30)
    assert [is_switched_back(failure) for failure in failures] == [True]
    assert (
        Cluster.objects.using("sqlite").count(),
        Cluster.objects.using("postgres").count(),
        JournalEntry.objects.using("sqlite").count(),
    ) == (0, 0, 0)


@on_both
def test_an_unpinned_sqlite_write_is_refused_while_the_instance_is_primary() -> None:
    with pytest.raises(IntegrityError) as caught:
        Cluster.objects.using("sqlite").create(**cluster_fields(name="late"))
    assert (is_switched_back(caught.value), Cluster.objects.using("sqlite").count()) == (
        True,
        0,
    )


@on_both
def test_a_write_pinned_to_sqlite_passes_the_guard_and_is_journaled() -> None:
    with pinned_alias("sqlite"):
        Cluster.objects.using("sqlite").create(**cluster_fields(name="pinned"))
    assert (
        list(Cluster.objects.using("sqlite").values_list("name", flat=True)),
        list(JournalEntry.objects.using("sqlite").values_list("op", flat=True)),
    ) == (["pinned"], ["insert"])


@on_both
def test_a_write_with_the_journal_suppressed_passes_the_guard() -> None:
    with journal_suppressed():
        Cluster.objects.using("sqlite").create(**cluster_fields(name="mirrored"))
    assert (
        list(Cluster.objects.using("sqlite").values_list("name", flat=True)),
        JournalEntry.objects.using("sqlite").count(),
    ) == (["mirrored"], 0)
