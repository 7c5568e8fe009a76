"""prometheus-client's multiprocess mode for the web server's workers (kindler.webserver).

Nothing here may import prometheus_client at module level: the server's main
process calls prepare() before any worker exists, and prometheus-client picks
its storage (memory or files) once, when it is first imported.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus-client names a worker's live gauges gauge_live<mode>_<pid>.db.
LIVE_GAUGE = re.compile(r"gauge_live\w*?_(\d+)\.db")
METRICS_FILE = re.compile(r"(counter|gauge_\w+|histogram|summary)_\d+\.db")
# A metrics file begins with how much of it is used (4 bytes) and 4 of padding.
HEADER_BYTES = 8


def metrics_dir() -> Path:
    """Return the folder where this instance's web workers keep their metrics."""
    from django.conf import settings

    return Path(os.environ.get(ENV) or settings.KINDLER_METRICS_DIR)


def prepare() -> Path:
    """Empty the metrics folder (private to this user) and make every future worker write there."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kindler.settings")
    path = metrics_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    # Only prometheus-client's own files: the folder is named by a setting,
    # and a mistaken one must not cost anything else in it.
    for name in os.listdir(path):
        if METRICS_FILE.fullmatch(name):
            (path / name).unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    return path


def forget_dead_workers(path: Path) -> list[int]:
    """Drop the live gauges of workers that are gone; return their process ids.

    The server starts workers again when they die (or on SIGHUP) and says
    nothing to the application, so the figures are swept when they are read.
    """
    from prometheus_client import multiprocess

    dead = [pid for pid in live_gauge_pids(path) if not running(pid)]
    for pid in dead:
        # Another worker reading at the same time may have removed them first.
        with contextlib.suppress(FileNotFoundError):
            multiprocess.mark_process_dead(pid, str(path))
    return dead


def metrics_files(path: Path) -> list[str]:
    """Return the workers' metrics files in path, leaving out those not yet sized.

    A worker makes its file empty and sizes it (with the 8-byte header that
    says how much is used) just after: until then there is nothing to read.
    """
    found = []
    for name in os.listdir(path):
        if name.endswith(".db"):
            with contextlib.suppress(FileNotFoundError):
                if (path / name).stat().st_size >= HEADER_BYTES:
                    found.append(str(path / name))
    return found


def live_gauge_pids(path: Path) -> list[int]:
    """Return the process ids that have live gauge files in path, in order."""
    return sorted(
        {int(match.group(1)) for name in os.listdir(path) if (match := LIVE_GAUGE.fullmatch(name))}
    )


def running(pid: int) -> bool:
    """Return True if a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
