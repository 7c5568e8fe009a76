"""Turn Ctrl-C and SIGTERM into a threading.Event, without a lock in a signal handler.

A Python signal handler runs in the main thread between two bytecodes, which
may be inside `event.wait()` while that thread holds the event's own lock:
an `event.set()` in the handler then waits for that lock forever, and the
process never stops (a reconciler ignored SIGTERM this way). Here the
handler does nothing in Python: the interpreter's C handler writes the
signal's number to a socket (`signal.set_wakeup_fd`), and a thread that reads
it sets the event, as any other thread may.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _noticed(signum: int, frame: FrameType | None) -> None:
    """Do nothing here: the number is already on its way to the watching thread."""


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set stop when SIGINT or SIGTERM arrives while the block runs (main thread only)."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    wanted = {int(number) for number in STOP_SIGNALS}

    def watch() -> None:
        # recv answers b"" once the block has ended and closed the other end.
        while received := reader.recv(16):
            if wanted & set(received):
                stop.set()

    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {number: signal.signal(number, _noticed) for number in STOP_SIGNALS}
    watcher = threading.Thread(target=watch, name="kindler-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(previous_fd)
        writer.close()
        watcher.join(timeout=5)
        reader.close()
