"""Counts over whole tables, kept a while once large (clusters/counts.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from clusters import counts
from clusters.metrics import operations_by_result
from tests.conftest import BOTH
from tests.factories import make_cluster, make_operation, make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Counts of 3 rows or more are large; the clock moves when the test says."""
    clock = Clock()
    monkeypatch.setattr(counts, "LARGE", 3)
    monkeypatch.setattr(counts.time, "monotonic", clock)
    counts.forget()
    yield clock
    counts.forget()


def reader(values: list[dict[str, int]]) -> Any:
    """Return a count function answering values in turn."""
    answers = iter(values)
    return lambda: next(answers)


def test_a_small_count_is_read_on_every_call(clock: Clock) -> None:
    count = reader([{"running": 2}, {"running": 1}])
    assert [counts.counted("c", "sqlite", count) for _ in range(2)] == [
        {"running": 2},
        {"running": 1},
    ]


def test_a_large_count_is_kept_until_it_is_fresh_no_more(clock: Clock) -> None:
    count = reader([{"running": 3}, {"running": 4}])
    first = counts.counted("c", "sqlite", count)
    clock.now += counts.FRESH - 0.1
    kept = counts.counted("c", "sqlite", count)
    clock.now += 0.1
    assert (first, kept, counts.counted("c", "sqlite", count)) == (
        {"running": 3},
        {"running": 3},
        {"running": 4},
    )


def test_counts_are_kept_per_database(clock: Clock) -> None:
    counts.counted("c", "sqlite", reader([{"running": 3}]))
    assert counts.counted("c", "postgres", reader([{"running": 5}])) == {"running": 5}


def test_the_dashboard_summary_of_many_clusters_is_the_one_read_last(
    alias: str, admin_client: Client, clock: Clock
) -> None:
    for _ in range(3):
        make_cluster(actual_state="running")
    admin_client.get("/")
    make_cluster(actual_state="failed")
    kept = admin_client.get("/")
    clock.now += counts.FRESH
    fresh = admin_client.get("/")
    assert [(r.context["summary"], len(r.context["rows"])) for r in (kept, fresh)] == [
        ([("running", 3)], 4),
        ([("running", 3), ("failed", 1)], 4),
    ]


def test_operations_by_result_of_many_are_the_ones_read_last(alias: str, clock: Clock) -> None:
    dev = make_cluster(name="dev")
    for _ in range(3):
        make_operation(dev, status="success")
    operations_by_result()
    make_operation(dev, status="failed")
    kept = operations_by_result()
    clock.now += counts.FRESH
    assert (kept, operations_by_result()) == (
        [("create", "success", 3)],
        [("create", "failed", 1), ("create", "success", 3)],
    )
