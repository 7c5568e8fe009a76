"""Server-rendered SVG charts over time: state bands, lines and time lines.

No JavaScript and no inline style: shapes carry presentation attributes and
classes (static/css/kindler.css colours them), so the Content-Security-Policy
holds. A Chart maps a time range onto its width; each drawing method adds
shapes; render() returns the SVG element. Output is deterministic (rounded
coordinates, fixed order) so tests compare it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Tick steps to choose from, shortest first: a chart shows at most MAX_TICKS.
TICK_STEPS = tuple(
    timedelta(seconds=s)
    for s in (1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
)
MAX_TICKS = 7


def number(value: float) -> str:
    """Return a coordinate as short text: one decimal at most, no trailing zero."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def tick_step(span: timedelta) -> timedelta:
    """Return the shortest tick step that keeps a span to MAX_TICKS ticks."""
    for step in TICK_STEPS:
        if span / step <= MAX_TICKS:
            return step
    return TICK_STEPS[-1]


def nice_ceiling(value: float) -> float:
    """Return 1, 2 or 5 times a power of ten, the smallest not below value (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if value <= factor * power:
            return float(factor * power)
    return float(10 * power)


def duration_text(seconds: float) -> str:
    """Return a duration as people read it: 0.4 s, 12 s, 3 min 5 s, 2 h 10 min."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclass(frozen=True)
class Segment:
    """A stretch of time in one state (a band), or one bar of a time line."""

    start: datetime
    end: datetime
    kind: str  # becomes the shape's class suffix: chart-<kind>
    label: str = ""


@dataclass
class Chart:
    """A time range drawn across width pixels, with an axis of time at the bottom."""

    start: datetime
    end: datetime
    width: int = 720
    height: int = 120
    left: int = 56
    right: int = 12
    top: int = 8
    bottom: int = 22
    shapes: list[str] = field(default_factory=list)

    @property
    def plot_width(self) -> float:
        return float(self.width - self.left - self.right)

    @property
    def plot_bottom(self) -> float:
        return float(self.height - self.bottom)

    def x(self, moment: datetime) -> float:
        """Return the x coordinate of a moment, clamped to the plot."""
        span = (self.end - self.start).total_seconds() or 1.0
        share = (moment - self.start).total_seconds() / span
        return self.left + min(max(share, 0.0), 1.0) * self.plot_width

    def time_axis(self) -> Chart:
        """Draw the baseline and ticks labelled with local times."""
        bottom = number(self.plot_bottom)
        self.shapes.append(
            f'<line class="chart-axis" x1="{self.left}" y1="{bottom}" '
            f'x2="{number(self.left + self.plot_width)}" y2="{bottom}"/>'
        )
        step = tick_step(self.end - self.start)
        seconds = step.total_seconds()
        first = math.ceil(self.start.timestamp() / seconds) * seconds
        moment = datetime.fromtimestamp(first, tz=self.start.tzinfo or UTC)
        label_format = "%m-%d" if step >= timedelta(days=1) else "%H:%M"
        if step < timedelta(minutes=1):
            label_format = "%H:%M:%S"
        while moment <= self.end:
            x = number(self.x(moment))
            text = timezone.localtime(moment).strftime(label_format)
            self.shapes.append(
                f'<line class="chart-tick" x1="{x}" y1="{bottom}" x2="{x}" '
                f'y2="{number(self.plot_bottom + 4)}"/>'
                f'<text class="chart-label" x="{x}" y="{self.height - 6}" '
                f'text-anchor="middle">{text}</text>'
            )
            moment += step
        return self

    def band(self, segments: Sequence[Segment], y: float, height: float) -> Chart:
        """Draw segments side by side in one horizontal band, each with a tooltip."""
        for segment in segments:
            x1, x2 = self.x(segment.start), self.x(segment.end)
            self.shapes.append(
                f'<rect class="chart-{escape(segment.kind)}" x="{number(x1)}" y="{number(y)}" '
                f'width="{number(max(x2 - x1, 1.0))}" height="{number(height)}">'
                f"<title>{escape(segment.label)}</title></rect>"
            )
        return self

    def marks(self, moments: Sequence[tuple[datetime, str]], css: str = "chart-mark") -> Chart:
        """Draw a vertical line across the plot at each moment, with its tooltip."""
        for moment, label in moments:
            x = number(self.x(moment))
            self.shapes.append(
                f'<line class="{css}" x1="{x}" y1="{self.top}" x2="{x}" '
                f'y2="{number(self.plot_bottom)}"><title>{escape(label)}</title></line>'
            )
        return self

    def line(self, points: Sequence[tuple[datetime, float | None]], unit: str = "") -> Chart:
        """Draw values over time on a y scale from 0, broken where a value is missing."""
        values = [value for _, value in points if value is not None]
        ceiling = nice_ceiling(max(values, default=0.0))
        height = self.plot_bottom - self.top
        suffix = f" {unit}" if unit else ""
        for level, at in ((ceiling, float(self.top)), (0.0, self.plot_bottom)):
            self.shapes.append(
                f'<text class="chart-label" x="{self.left - 6}" y="{number(at + 4)}" '
                f'text-anchor="end">{number(level)}{escape(suffix)}</text>'
            )
        runs: list[list[str]] = [[]]
        for moment, value in points:
            if value is None:
                runs.append([])
                continue
            y = self.plot_bottom - min(max(value, 0.0) / ceiling, 1.0) * height
            runs[-1].append(f"{number(self.x(moment))},{number(y)}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                self.shapes.append(f'<circle class="chart-point" cx="{cx}" cy="{cy}" r="2"/>')
            elif run:
                self.shapes.append(f'<polyline class="chart-line" points="{" ".join(run)}"/>')
        return self

    def render(self, title: str) -> SafeString:
        """Return the chart as an inline SVG element named by title."""
        body = "".join(self.shapes)
        # Every text part above went through escape().
        return mark_safe(
            f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
            f'height="{self.height}"><title>{escape(title)}</title>{body}</svg>'
        )


def state_chart(
    segments: Sequence[Segment],
    switches: Sequence[tuple[datetime, str]],
    start: datetime,
    end: datetime,
    title: str,
) -> SafeString:
    """Return a band of states over time with a mark at each switch."""
    chart = Chart(start, end, height=64)
    chart.band(segments, y=chart.top, height=chart.plot_bottom - chart.top)
    return chart.marks(switches).time_axis().render(title)


def line_chart(
    points: Sequence[tuple[datetime, float | None]],
    start: datetime,
    end: datetime,
    title: str,
    unit: str = "",
) -> SafeString:
    """Return one value over time as a line (gaps where it is unknown)."""
    return Chart(start, end).line(points, unit).time_axis().render(title)


def timeline(
    rows: Sequence[tuple[str, Segment]], start: datetime, end: datetime, title: str
) -> SafeString:
    """Return one row per (label, bar): the label at the left, the bar's duration at its end."""
    height = 20
    chart = Chart(start, end, height=8 + height * len(rows) + 22, left=64, right=72)
    for index, (label, bar) in enumerate(rows):
        y = chart.top + index * height
        chart.shapes.append(
            f'<text class="chart-label" x="{chart.left - 6}" y="{y + 14}" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        chart.band([bar], y=y + 3, height=height - 6)
        seconds = (bar.end - bar.start).total_seconds()
        chart.shapes.append(
            f'<text class="chart-label" x="{number(chart.x(bar.end) + 4)}" y="{y + 14}">'
            f"{duration_text(seconds)}</text>"
        )
    return chart.time_axis().render(title)
