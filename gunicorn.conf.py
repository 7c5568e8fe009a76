"""gunicorn's settings for `gunicorn kindler.wsgi`, read when it starts in this folder.

Kindler serves itself with granian (kindler.webserver); gunicorn remains a way
to serve it for deployments built around it (docs/deployment.md). The same
variables configure both: KINDLER_BIND, KINDLER_WORKERS, KINDLER_THREADS,
KINDLER_ACCESS_LOG and KINDLER_GRACEFUL_TIMEOUT. gunicorn's own options on its
command line or in GUNICORN_CMD_ARGS override them.
"""

from __future__ import annotations

import os
from typing import Any

from kindler import multiprocess

# What the server and its workers write (the access log file, the metrics
# files) is the instance's own, as everything beside the SQLite file is.
# Set while the settings are read: gunicorn opens its log files before any hook.
os.umask(0o077)


def whole_number(name: str, default: int) -> int:
    """Return the variable name as a whole number, or default when it is unset."""
    value = os.environ.get(name, str(default))
    if not value.strip().isdigit():
        raise SystemExit(f"gunicorn.conf.py: {name} must be a whole number, got {value!r}")
    return int(value)


def access_log(target: str) -> str | None:
    """Return gunicorn's accesslog for KINDLER_ACCESS_LOG ("-": stdout; off: none)."""
    return None if target.strip().lower() in ("", "off", "none") else target


wsgi_app = "kindler.wsgi:application"
bind = [os.environ.get("KINDLER_BIND", "127.0.0.1:8000")]
# Worker processes, not threads alone: this Python has a GIL. Threads let a
# worker keep answering while one request waits on a slow PostgreSQL.
workers = whole_number("KINDLER_WORKERS", 2)
threads = whole_number("KINDLER_THREADS", 4)
worker_class = "gthread"
graceful_timeout = whole_number("KINDLER_GRACEFUL_TIMEOUT", 10)
accesslog = access_log(os.environ.get("KINDLER_ACCESS_LOG", "-"))
# The address, never the query string: nothing secret travels there, but
# the format matches kindler.webserver's.
access_log_format = '%(h)s - %(t)s "%(m)s %(U)s %(H)s" %(s)s %(M)sms'
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn):
# two instances on one host would take it from each other.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Give every worker one metrics folder, before any worker exists."""
    # prometheus-client picks its storage when a worker first imports it.
    multiprocess.prepare()
