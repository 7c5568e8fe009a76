"""prometheus-client multiprocess mode for gunicorn (kindler/multiprocess.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.test import override_settings

from kindler import multiprocess


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # prepare() sets the variable for the gunicorn master; monkeypatch restores it.
    monkeypatch.delenv(multiprocess.ENV, raising=False)
    path = tmp_path / "metrics"
    path.mkdir()
    (path / "counter_123.db").write_bytes(b"left by a previous server")
    return path


def test_prepare_empties_the_folder_a_previous_server_left(metrics_dir: Path) -> None:
    with override_settings(KINDLER_METRICS_DIR=metrics_dir):
        multiprocess.prepare()
    assert list(metrics_dir.iterdir()) == []


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
