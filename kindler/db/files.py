"""Keep the SQLite file, the files beside it and config/secrets.env private.

The SQLite file holds password hashes and, during an outage, every change;
the -wal and -shm files hold the same pages. SQLite creates them with the
process umask (usually 0644, readable by every local user), so each new
connection narrows them to 0600. The switch history and the probe samples
hold PostgreSQL's error texts: they are written 0600 here, however they were
made before. config/secrets.env is the person's to make; Kindler says when
other users can read it (`check --deploy`, `dbstatus`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks

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


def append_line(path: Path, line: str) -> None:
    """Append line to a file only the user Kindler runs as may read, in one O_APPEND write."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
        handle.write(line)


def replace_text(path: Path, text: str) -> None:
    """Replace path's content with text at once (a private copy renamed over it)."""
    spare = path.with_name(f"{path.name}.{os.getpid()}")
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    spare.replace(path)


def secrets_file_warnings() -> list[str]:
    """Return what is wrong with config/secrets.env's permissions ([] when nothing, or no file)."""
    path = Path(settings.KINDLER_SECRETS_FILE)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return []
    if not mode & 0o006:
        return []
    return [
        f"{path} can be read by every user of this machine (mode {mode:04o}); "
        f"make it private: chmod 600 {path}"
    ]


def check_secrets_file(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn, under `check --deploy`, when config/secrets.env is readable by other users."""
    return [checks.Warning(text, id="kindler.W001") for text in secrets_file_warnings()]
