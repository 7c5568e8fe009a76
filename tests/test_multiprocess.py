"""prometheus-client multiprocess mode for the web server's workers (kindler/multiprocess.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from django.test import override_settings

from kindler import multiprocess


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # prepare() sets the variable for the server's main process; monkeypatch restores it.
    monkeypatch.delenv(multiprocess.ENV, raising=False)
    path = tmp_path / "metrics"
    path.mkdir()
    (path / "counter_123.db").write_bytes(b"left by a previous server")
    return path


def test_prepare_empties_the_folder_a_previous_server_left(metrics_dir: Path) -> None:
    with override_settings(KINDLER_METRICS_DIR=metrics_dir):
        multiprocess.prepare()
    assert list(metrics_dir.iterdir()) == []


def test_prepare_leaves_other_files_alone_and_makes_the_folder_private(metrics_dir: Path) -> None:
    (metrics_dir / "notes.txt").write_text("not the server's")
    metrics_dir.chmod(0o755)
    with override_settings(KINDLER_METRICS_DIR=metrics_dir):
        multiprocess.prepare()
    assert sorted(os.listdir(metrics_dir)) == ["notes.txt"]
    assert metrics_dir.stat().st_mode & 0o777 == 0o700


def test_prepare_points_future_workers_at_the_folder(metrics_dir: Path) -> None:
    with override_settings(KINDLER_METRICS_DIR=metrics_dir):
        multiprocess.prepare()
    assert os.environ[multiprocess.ENV] == str(metrics_dir)


def test_an_explicit_prometheus_folder_wins(
    metrics_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(multiprocess.ENV, str(tmp_path / "explicit"))
    with override_settings(KINDLER_METRICS_DIR=metrics_dir):
        assert multiprocess.metrics_dir() == tmp_path / "explicit"


@pytest.fixture
def dead_pid() -> int:
    """Return the id of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_live_gauges_of_a_dead_worker_are_removed(metrics_dir: Path, dead_pid: int) -> None:
    for mode in ("liveall", "livesum"):
        (metrics_dir / f"gauge_{mode}_{dead_pid}.db").write_bytes(b"")
    assert (multiprocess.forget_dead_workers(metrics_dir), sorted(os.listdir(metrics_dir))) == (
        [dead_pid],
        ["counter_123.db"],
    )


def test_the_live_gauges_of_a_running_worker_stay(metrics_dir: Path) -> None:
    (metrics_dir / f"gauge_liveall_{os.getpid()}.db").write_bytes(b"")
    assert (multiprocess.forget_dead_workers(metrics_dir), sorted(os.listdir(metrics_dir))) == (
        [],
        ["counter_123.db", f"gauge_liveall_{os.getpid()}.db"],
    )


def test_the_other_figures_of_a_dead_worker_stay(metrics_dir: Path, dead_pid: int) -> None:
    kept = sorted(f"{kind}_{dead_pid}.db" for kind in ("counter", "gauge_max", "histogram"))
    for name in kept:
        (metrics_dir / name).write_bytes(b"")
    assert (multiprocess.forget_dead_workers(metrics_dir), sorted(os.listdir(metrics_dir))) == (
        [],
        sorted(["counter_123.db", *kept]),
    )
