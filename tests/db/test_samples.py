"""The bounded sample file behind the System page's charts (kindler/db/samples.py)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from kindler.db import samples
from kindler.db.failover.monitor import Probe
from kindler.db.failover.pinning import pinned_alias
from tests.conftest import BOTH
from tests.factories import make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture(autouse=True)
def _own_file(no_probes: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No probing thread: its own sample, taken just as the test's, would stand
    # for the interval and could still be on its way to the file when read.
    monkeypatch.setattr(samples, "samples_path", lambda: tmp_path / "kindler.db.samples")
    samples._last.clear()


def probe(latency: float | None, usable: bool = True) -> Probe:
    return Probe(reachable=usable, usable=usable, latency_ms=latency, error=None, at=timezone.now())


def lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in samples.samples_path().read_text().splitlines()]


@pytest.mark.postgres
def test_a_probe_becomes_a_sample_with_latency_state_and_journal_length() -> None:
    samples.record_probe(None, probe=probe(3.14159))
    [sample] = lines()
    assert (sample["latency_ms"], sample["journal"]) == (3.142, 0)
    assert sample["state"] == "primary"


@pytest.mark.postgres
def test_the_journal_length_counts_changes_made_on_sqlite() -> None:
    # With no probing thread (_own_file): a monitor started anew recovers once,
    # and its replay would take the change out of the journal before it is counted.
    with pinned_alias("sqlite"):
        make_cluster(name="dev")
    samples.record_probe(None, probe=probe(1.0))
    assert lines()[0]["journal"] == 1


def test_a_failed_probe_has_no_latency() -> None:
    samples.record_probe(None, probe=probe(None, usable=False))
    assert lines()[0]["latency_ms"] is None


def test_one_sample_per_interval(settings: Any) -> None:
    settings.KINDLER_SAMPLE_INTERVAL = 60
    samples.record_probe(None, probe=probe(1.0))
    samples.record_probe(None, probe=probe(2.0))
    assert [sample["latency_ms"] for sample in lines()] == [1.0]
    settings.KINDLER_SAMPLE_INTERVAL = 0
    samples.record_probe(None, probe=probe(3.0))
    assert [sample["latency_ms"] for sample in lines()] == [1.0, 3.0]


def test_the_file_keeps_its_last_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samples, "SAMPLE_LIMIT", 5)
    now = timezone.now()
    for index in range(40):
        samples.append({"at": (now + timedelta(seconds=index)).isoformat(), "journal": index})
    kept = [sample["journal"] for sample in lines()]
    # Trimmed to the last 5 whenever the file passes 5 * 160 bytes: the
    # newest lines, in order, and fewer than a file never trimmed would hold.
    assert 5 <= len(kept) < 20
    assert kept == list(range(40 - len(kept), 40))


def test_samples_are_read_for_the_last_day_oldest_first_skipping_broken_lines() -> None:
    now = timezone.now()
    for hours, value in ((30, 1), (2, 2), (1, 3)):
        samples.append({"at": (now - timedelta(hours=hours)).isoformat(), "journal": value})
    with samples.samples_path().open("a") as handle:
        handle.write('{"at": "not a date"}\n{"cut short')
    assert [sample["journal"] for sample in samples.samples()] == [2, 3]


def test_no_file_means_no_samples() -> None:
    assert samples.samples() == []


@pytest.mark.postgres
def test_no_probing_thread_samples_beside_the_test() -> None:
    assert [thread for thread in threading.enumerate() if thread.name == "kindler-health"] == []
