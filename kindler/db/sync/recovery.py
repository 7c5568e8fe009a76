"""The sync layer's part in failing over: recover before the switch back, mirror after it.

The failover layer knows nothing of journals. It calls recover() (listed in
KINDLER_RECOVERY_HOOKS) while the instance is `recovering`: once for the
bulk of the journal, and once more under SQLite's write lock for what came
in meanwhile, just before the switch to primary. And it sends `ticked` after
each healthy probe in the leading process, which keeps the mirror running.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from django.conf import settings

from kindler.db.failover.errors import describe_error
from kindler.db.failover.monitor import close_thread_connections
from kindler.db.failover.state import State, read
from kindler.db.sync.adopt import reconcile_identity
from kindler.db.sync.replay import replay
from kindler.db.sync.runner import drain_and_mirror

logger = logging.getLogger("kindler.db")


def recover() -> None:
    """Carry everything this instance owes PostgreSQL into it.

    First the journal, in order; then, when PostgreSQL is new, replaced or
    restored, every local row it lacks (kindler.db.sync.adopt).
    """
    replay()
    reconcile_identity()


class MirrorThread:
    """Mirror PostgreSQL into SQLite every KINDLER_MIRROR_INTERVAL seconds, in one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None

    def ensure_running(self, sender: Any = None, **kwargs: Any) -> None:
        """Start the thread in this process unless it runs already (a `ticked` receiver)."""
        if self._pid == os.getpid() or float(settings.KINDLER_MIRROR_INTERVAL) <= 0:
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="kindler-mirror", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            interval = float(settings.KINDLER_MIRROR_INTERVAL)
            shared = read()
            if interval > 0 and shared is not None and shared.state is State.PRIMARY:
                try:
                    drain_and_mirror(with_mirror=True)
                except Exception as exc:
                    # Recorded for the status pages by the run itself.
                    logger.warning("Sync with PostgreSQL failed: %s", describe_error(exc))
                finally:
                    # This thread's connections are its own: do not keep them open.
                    close_thread_connections()
            time.sleep(interval if interval > 0 else 1.0)


mirror_thread = MirrorThread()
