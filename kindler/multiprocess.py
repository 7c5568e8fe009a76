"""prometheus-client's multiprocess mode for gunicorn (hooks in config/gunicorn.conf.py).

Nothing here may import prometheus_client at module level: the gunicorn
master calls prepare() before any worker exists, and prometheus-client picks
its storage (memory or files) once, when it is first imported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir() -> Path:
    """Return the folder where this instance's web workers keep their metrics."""
    from django.conf import settings

    return Path(os.environ.get(ENV) or settings.KINDLER_METRICS_DIR)


def prepare() -> Path:
    """Empty the metrics folder and make every future worker write there."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kindler.settings")
    path = metrics_dir()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    return path


def worker_exited(pid: int) -> None:
    """Drop a finished worker's live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(metrics_dir()))
