"""Keep the SQLite file and its companions private to the user Kindler runs as.

The SQLite file holds password hashes and, during an outage, every change;
the -wal and -shm files hold the same pages. SQLite creates them with the
process umask (usually 0644, readable by every local user), so each new
connection narrows them to 0600.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Any

COMPANIONS = ("", "-wal", "-shm")


def make_private(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Set the SQLite file of a new connection, and its -wal and -shm files, to mode 0600."""
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict["NAME"])
    if name == ":memory:" or name.startswith("file:"):
        return
    for suffix in COMPANIONS:
        path = name + suffix
        with contextlib.suppress(OSError):
            if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
                os.chmod(path, 0o600)
