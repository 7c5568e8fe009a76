"""The SVG chart builder (kindler/charts.py): exact output for small charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kindler.charts import (
    Chart,
    Segment,
    duration_text,
    nice_ceiling,
    tick_step,
    timeline,
)

START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
OPEN = (
    '<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
    'viewBox="0 0 200 60" width="200" height="60">'
)


def small() -> Chart:
    return Chart(START, END, width=200, height=60, left=20, right=10, top=5, bottom=15)


def test_the_time_axis_has_a_tick_every_quarter_hour_over_an_hour() -> None:
    ticks = "".join(
        f'<line class="chart-tick" x1="{x}" y1="45" x2="{x}" y2="49"/>'
        f'<text class="chart-label" x="{x}" y="54" text-anchor="middle">{label}</text>'
        for x, label in (
            ("20", "00:00"),
            ("62.5", "00:15"),
            ("105", "00:30"),
            ("147.5", "00:45"),
            ("190", "01:00"),
        )
    )
    assert small().time_axis().render("T") == (
        f'{OPEN}<title>T</title><line class="chart-axis" x1="20" y1="45" x2="190" y2="45"/>'
        f"{ticks}</svg>"
    )


def test_a_line_breaks_where_a_value_is_missing_and_scales_to_a_round_ceiling() -> None:
    points = [
        (START, 1.0),
        (START + timedelta(minutes=30), None),
        (START + timedelta(minutes=40), 3.0),
        (END, 4.0),
    ]
    assert small().line(points, "ms").render("L") == (
        f"{OPEN}<title>L</title>"
        '<text class="chart-label" x="14" y="9" text-anchor="end">5 ms</text>'
        '<text class="chart-label" x="14" y="49" text-anchor="end">0 ms</text>'
        '<circle class="chart-point" cx="20" cy="37" r="2"/>'
        '<polyline class="chart-line" points="133.3,21 190,13"/></svg>'
    )


def test_bands_and_marks_carry_escaped_tooltips() -> None:
    chart = small().band(
        [Segment(START, START + timedelta(minutes=15), "state-primary", "<a>")], 5, 40
    )
    chart.marks([(START + timedelta(minutes=15), "switch & go")])
    assert chart.render("B & C") == (
        f"{OPEN}<title>B &amp; C</title>"
        '<rect class="chart-state-primary" x="20" y="5" width="42.5" height="40">'
        "<title>&lt;a&gt;</title></rect>"
        '<line class="chart-mark" x1="62.5" y1="5" x2="62.5" y2="45">'
        "<title>switch &amp; go</title></line></svg>"
    )


def test_moments_outside_the_range_are_clamped_to_the_plot() -> None:
    chart = small()
    assert (chart.x(START - timedelta(hours=1)), chart.x(END + timedelta(hours=1))) == (20, 190)


def test_a_timeline_draws_a_row_per_operation_with_its_duration() -> None:
    rows = [
        ("create", Segment(START, START + timedelta(seconds=90), "success", "create ok")),
        (
            "stop",
            Segment(
                START + timedelta(minutes=2),
                START + timedelta(minutes=2, seconds=5),
                "failed",
                "stop",
            ),
        ),
    ]
    svg = timeline(rows, START, START + timedelta(minutes=3), "Ops")
    assert svg.startswith(
        '<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        'viewBox="0 0 720 70" width="720" height="70"><title>Ops</title>'
        '<text class="chart-label" x="58" y="22" text-anchor="end">create</text>'
        '<rect class="chart-success" x="64" y="11" width="292" height="14">'
        "<title>create ok</title></rect>"
        '<text class="chart-label" x="360" y="22">1 min 30 s</text>'
        '<text class="chart-label" x="58" y="42" text-anchor="end">stop</text>'
        '<rect class="chart-failed" x="453.3" y="31" width="16.2" height="14">'
        "<title>stop</title></rect>"
        '<text class="chart-label" x="473.6" y="42">5.0 s</text>'
        '<line class="chart-axis" x1="64" y1="48" x2="648" y2="48"/>'
    )
    assert svg.count('class="chart-tick"') == 4


@pytest.mark.parametrize(
    ("span", "step"),
    [
        (timedelta(seconds=30), timedelta(seconds=5)),
        (timedelta(hours=1), timedelta(minutes=15)),
        (timedelta(hours=24), timedelta(hours=6)),
        (timedelta(days=30), timedelta(days=7)),
    ],
)
def test_tick_steps_keep_an_axis_readable(span: timedelta, step: timedelta) -> None:
    assert tick_step(span) == step


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1.0), (0.3, 0.5), (4, 5.0), (12, 20.0), (100, 100.0), (101, 200.0)]
)
def test_a_scale_ends_on_one_two_or_five_times_a_power_of_ten(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == ceiling


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.42, "0.4 s"), (12.4, "12 s"), (185, "3 min 5 s"), (120, "2 min"), (7800, "2 h 10 min")],
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
