"""The System page's charts (kindler/db/pictures.py) from switches and samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kindler.charts import Segment
from kindler.db.failover.monitor import Snapshot
from kindler.db.failover.state import State
from kindler.db.pictures import state_segments, system_charts

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
START = NOW - timedelta(hours=24)


def snapshot(state: State = State.PRIMARY, configured: bool = True) -> Snapshot:
    return Snapshot(
        active="postgres",
        state=state,
        since=NOW - timedelta(hours=2),
        cause="recovery finished",
        configured=configured,
        probe=None,
    )


def switch(hours_ago: float, source: str, target: str, seconds_in_source: float) -> dict[str, Any]:
    return {
        "at": NOW - timedelta(hours=hours_ago),
        "source": source,
        "target": target,
        "cause": f"{source} to {target}",
        "seconds_in_source": seconds_in_source,
        "pid": 1,
    }


# The switch history lists the newest first.
HISTORY = [
    switch(2, "recovering", "primary", 60),
    switch(2 + 1 / 60, "fallback", "recovering", 3600),
    switch(3 + 1 / 60, "primary", "fallback", 8 * 3600),
    {**switch(5, "primary", "primary", 10), "host": {"source": "a", "target": "b"}},
]


def test_states_run_from_what_the_first_switch_knew_to_now() -> None:
    segments, marks = state_segments(snapshot(), HISTORY, START, NOW)
    assert [(s.kind, s.start, s.end) for s in segments] == [
        ("state-unknown", START, NOW - timedelta(hours=11, minutes=1)),
        (
            "state-primary",
            NOW - timedelta(hours=11, minutes=1),
            NOW - timedelta(hours=3, minutes=1),
        ),
        (
            "state-fallback",
            NOW - timedelta(hours=3, minutes=1),
            NOW - timedelta(hours=2, minutes=1),
        ),
        ("state-recovering", NOW - timedelta(hours=2, minutes=1), NOW - timedelta(hours=2)),
        ("state-primary", NOW - timedelta(hours=2), NOW),
    ]
    assert [label for _, label in marks] == [
        "08:59:00 primary → fallback: primary to fallback",
        "09:59:00 fallback → recovering: fallback to recovering",
        "10:00:00 recovering → primary: recovering to primary",
    ]


def test_without_switches_the_current_state_fills_the_day() -> None:
    quiet = Snapshot("postgres", State.PRIMARY, NOW - timedelta(days=3), "", True, None)
    segments, marks = state_segments(quiet, [], START, NOW)
    assert (segments, marks) == (
        [Segment(START, NOW, "state-primary", "primary 12:00:00 to 12:00:00")],
        [],
    )


def test_switches_older_than_the_day_are_left_out() -> None:
    old = [switch(30, "fallback", "primary", 50)]
    current = Snapshot("postgres", State.PRIMARY, NOW - timedelta(hours=30), "", True, None)
    segments, marks = state_segments(current, old, START, NOW)
    assert ([s.kind for s in segments], marks) == (["state-primary"], [])


def test_a_state_entered_within_the_day_starts_there() -> None:
    segments, _marks = state_segments(snapshot(), [], START, NOW)
    assert [(s.kind, s.start) for s in segments] == [
        ("state-unknown", START),
        ("state-primary", NOW - timedelta(hours=2)),
    ]


def test_the_system_charts_say_what_they_show() -> None:
    samples: list[dict[str, Any]] = [
        {"at": NOW - timedelta(minutes=2), "latency_ms": 2.5, "journal": 0},
        {"at": NOW - timedelta(minutes=1), "latency_ms": None, "journal": 4},
    ]
    pictures = system_charts(snapshot(), HISTORY, samples, now=NOW)
    assert [(p.title, p.caption) for p in pictures] == [
        ("Database state, last 24 hours", "3 switches in the last 24 hours."),
        ("PostgreSQL probe latency", "1 sample; latest 2.5 ms."),
        ("Journal: changes waiting to be replayed", "2 samples; latest 4."),
    ]
    svgs = [p.svg for p in pictures]
    assert all(svg is not None and svg.startswith('<svg class="chart"') for svg in svgs)
    assert str(svgs[0]).count('class="chart-mark"') == 3


def test_without_postgres_or_samples_there_is_nothing_to_draw() -> None:
    pictures = system_charts(snapshot(configured=False), [], [], now=NOW)
    assert [(p.title, p.caption, p.svg) for p in pictures] == [
        ("Database state", "PostgreSQL is not configured: SQLite only.", None),
        ("PostgreSQL probe latency", "No samples yet.", None),
        ("Journal: changes waiting to be replayed", "No samples yet.", None),
    ]
