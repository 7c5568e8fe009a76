"""The System page's charts: database state with its switches, probe latency, journal length.

Built from the switch history (kindler.db.telemetry) and the samples
(kindler.db.samples) with the chart builder in kindler.charts. Each chart is
one entry of the dict system_charts() returns; a new chart is one more entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.safestring import SafeString

from kindler.charts import Segment, line_chart, state_chart
from kindler.db.failover.monitor import Snapshot

WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Picture:
    """A chart with its heading and a line saying what it shows."""

    title: str
    caption: str
    svg: SafeString | None  # None: nothing to draw yet (the caption says why)


def state_segments(
    snapshot: Snapshot, switches: list[dict[str, Any]], start: datetime, end: datetime
) -> tuple[list[Segment], list[tuple[datetime, str]]]:
    """Return the states between start and end as segments, and a mark per switch."""
    events = sorted(
        (entry for entry in switches if "host" not in entry and start < entry["at"] <= end),
        key=lambda entry: entry["at"],
    )
    current = str(events[0]["source"]) if events else str(snapshot.state)
    since = start
    if events:
        # Before the first switch the instance was in its source state for
        # seconds_in_source; earlier than that is not known.
        known = events[0]["at"] - timedelta(seconds=float(events[0].get("seconds_in_source", 0)))
        if known > start:
            since = known
    elif snapshot.since > start:
        since = snapshot.since
    segments, marks = [], []
    if since > start:
        segments.append(Segment(start, since, "state-unknown", "not recorded"))
    for event in events:
        segments.append(_segment(since, event["at"], current))
        when = timezone.localtime(event["at"]).strftime("%H:%M:%S")
        marks.append(
            (event["at"], f"{when} {event['source']} → {event['target']}: {event['cause']}")
        )
        current, since = str(event["target"]), event["at"]
    segments.append(_segment(since, end, current))
    return segments, marks


def _segment(start: datetime, end: datetime, state: str) -> Segment:
    span = f"{timezone.localtime(start):%H:%M:%S} to {timezone.localtime(end):%H:%M:%S}"
    return Segment(start, end, f"state-{state}", f"{state} {span}")


def system_charts(
    snapshot: Snapshot,
    switches: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    now: datetime | None = None,
) -> list[Picture]:
    """Return the System page's charts over the last 24 hours."""
    end = now or timezone.now()
    start = end - WINDOW
    pictures = []
    if snapshot.configured:
        segments, marks = state_segments(snapshot, switches, start, end)
        title = "Database state, last 24 hours"
        svg = state_chart(segments, marks, start, end, title)
        caption = f"{len(marks)} switch{'es' if len(marks) != 1 else ''} in the last 24 hours."
        pictures.append(Picture(title, caption, svg))
    else:
        pictures.append(
            Picture("Database state", "PostgreSQL is not configured: SQLite only.", None)
        )
    recent = [sample for sample in samples if start <= sample["at"] <= end]
    for key, title, unit in (
        ("latency_ms", "PostgreSQL probe latency", "ms"),
        ("journal", "Journal: changes waiting to be replayed", ""),
    ):
        points = [(sample["at"], _number(sample.get(key))) for sample in recent]
        if not any(value is not None for _, value in points):
            caption = "No samples yet." if not recent else "None recorded in the last 24 hours."
            pictures.append(Picture(title, caption, None))
            continue
        values = [value for _, value in points if value is not None]
        count = f"{len(values)} sample{'s' if len(values) != 1 else ''}"
        caption = f"{count}; latest {values[-1]:g}{' ' + unit if unit else ''}."
        pictures.append(Picture(title, caption, line_chart(points, start, end, title, unit)))
    return pictures


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
