"""Time how long `manage.py serve` takes to stop when idle, after Ctrl-C or SIGTERM.

Starts `manage.py serve` (web server and reconciler, on its own SQLite file)
--tries times per signal, waits until the reconciler runs and the server
answers, sends the signal to the whole process group as a terminal's Ctrl-C
does, and times the exit. Prints a Markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

from bench._setup import kindler_environ  # noqa: E402
from tests.pgserver import free_port  # noqa: E402


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def one_stop(stop: signal.Signals, folder: Path) -> float:
    """Start serve, wait until it is idle, signal its group; return seconds until it exited."""
    port = free_port()
    env = kindler_environ(
        DJANGO_SETTINGS_MODULE="kindler.settings",
        SQLITE_PATH=str(folder / "kindler.db"),
        SECRET_KEY="bench-" + os.urandom(16).hex(),
        KINDLER_BIND=f"127.0.0.1:{port}",
        KINDLER_WS_BIND=f"127.0.0.1:{free_port()}",
        KINDLER_ACCESS_LOG="off",
        PYTHONUNBUFFERED="1",
    )
    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert serve.stdout is not None
        while not (line := serve.stdout.readline()).startswith(b"Reconciling the clusters"):
            if not line:
                raise RuntimeError("manage.py serve ended before the reconciler started")
        deadline = time.monotonic() + 60
        while not answers(port):
            if time.monotonic() > deadline:
                raise RuntimeError("the web server did not answer within 60 s")
            time.sleep(0.1)
        time.sleep(1)  # idle: no request in flight
        started = time.monotonic()
        os.killpg(serve.pid, stop)
        serve.communicate(timeout=120)
        return time.monotonic() - started
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=7, help="starts per signal (default 7)")
    args = parser.parse_args()
    print("| Signal to the process group | Tries | Median | Slowest |")
    print("|---|---|---|---|")
    for stop in (signal.SIGINT, signal.SIGTERM):
        with tempfile.TemporaryDirectory(prefix="kindler-bench-") as folder:
            times = [one_stop(stop, Path(folder) / str(n)) for n in range(args.tries)]
        print(
            f"| {stop.name} | {args.tries} | {statistics.median(times):.2f} s "
            f"| {max(times):.2f} s |"
        )


if __name__ == "__main__":
    main()
