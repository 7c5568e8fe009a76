"""Run Kindler's processes side by side and stop them together."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

STOP_GRACE_SECONDS = 15


def run_together(commands: Sequence[Sequence[str]]) -> int:
    """Start every command; when one exits or a signal arrives, stop them all.

    Return the exit status of the first process that ended on its own, or 0
    when Ctrl-C or SIGTERM asked for the stop.
    """
    processes = [subprocess.Popen(list(command)) for command in commands]
    names = {
        process.pid: " ".join(command[-2:])
        for process, command in zip(processes, commands, strict=True)
    }
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        while not stopping:
            ended = [p for p in processes if p.poll() is not None]
            if ended:
                status = ended[0].returncode or 0
                print(
                    f"{names[ended[0].pid]} exited with status {status}; stopping the others.",
                    file=sys.stderr,
                )
                break
            time.sleep(0.2)
    finally:
        stop_all(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every running process, then SIGKILL what is left after the grace period."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
