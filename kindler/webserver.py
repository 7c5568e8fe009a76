"""The web server: granian serving kindler.asgi, configured from the environment.

Run as `python -m kindler.webserver` (`manage.py serve` does, and so do the
compose files). granian's HTTP handling is written in Rust; kindler.asgi
receives each request's body on the worker's event loop, within
KINDLER_BODY_TIMEOUT, and only then hands it to one of the threads that run
Django (docs/performance.md).

Every server value comes from the environment, read here: KINDLER_BIND,
KINDLER_WORKERS, KINDLER_ACCESS_LOG and KINDLER_GRACEFUL_TIMEOUT; the
workers read KINDLER_THREADS and KINDLER_BODY_TIMEOUT through Django's
settings (docs/configuration.md).
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
from collections.abc import Mapping
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.server import MPServer

from kindler import multiprocess

APPLICATION = "kindler.asgi:application"
DEFAULT_BIND = "127.0.0.1:8000"
ACCESS_FORMAT = '%(addr)s - [%(time)s] "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms'


def split_bind(bind: str) -> tuple[str, int]:
    """Return the host and the port of `HOST:PORT` (an IPv6 host in brackets)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"KINDLER_BIND must be HOST:PORT, got {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def access_log_handler(target: str) -> dict[str, Any] | None:
    """Return the handler that writes the access log to target ("-": stdout), or None for off."""
    if target.strip().lower() in ("", "off", "none"):
        return None
    if target == "-":
        return {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}
    return {"class": "logging.FileHandler", "filename": target}


def logging_config(access: dict[str, Any] | None) -> dict[str, Any]:
    """Return the server's logging: its own messages on stderr, the access log to access."""
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(message)s"},
            "server": {"format": "[%(levelname)s] %(message)s"},
        },
        "handlers": {
            "server": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "server",
            },
        },
        "loggers": {
            "_granian": {"handlers": ["server"], "level": "INFO", "propagate": False},
        },
    }
    if access is not None:
        config["handlers"]["access"] = {**access, "formatter": "plain"}
        config["loggers"]["granian.access"] = {
            "handlers": ["access"],
            "level": "INFO",
            "propagate": False,
        }
    return config


def can_listen(host: str, port: int) -> None:
    """Raise ValueError, in words, when nothing can listen on host:port."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        socket.create_server((host, port), family=family).close()
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ValueError(f"cannot listen on {host}:{port}: {reason}") from None


def whole_number(environ: Mapping[str, str], name: str, default: int) -> int:
    """Return environ[name] as a whole number, or default when it is unset."""
    value = environ.get(name, str(default))
    if not value.strip().isdigit():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def positive_seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    """Return environ[name] as a number of seconds above 0, or default when it is unset."""
    value = environ.get(name, str(default))
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a number of seconds above 0, got {value!r}")
    return seconds


def build(environ: Mapping[str, str] = os.environ) -> MPServer:
    """Return the server as configured by environ."""
    host, port = split_bind(environ.get("KINDLER_BIND", DEFAULT_BIND))
    access = access_log_handler(environ.get("KINDLER_ACCESS_LOG", "-"))
    # Checked here so that a bad value stops the server with one line; the
    # workers' threads (kindler.asgi) let a worker keep answering while one
    # request waits on a slow PostgreSQL.
    whole_number(environ, "KINDLER_THREADS", 4)
    positive_seconds(environ, "KINDLER_BODY_TIMEOUT", 10)
    # Worker processes, not threads: this Python has a GIL.
    server = MPServer(
        APPLICATION,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        workers=whole_number(environ, "KINDLER_WORKERS", 2),
        log_access=access is not None,
        log_access_format=ACCESS_FORMAT,
        log_dictconfig=logging_config(access),
        # A worker that dies (killed, out of memory) is started again.
        respawn_failed_workers=True,
        respawn_interval=1.0,
        workers_kill_timeout=whole_number(environ, "KINDLER_GRACEFUL_TIMEOUT", 10),
    )
    # Before any worker exists: prometheus-client picks its storage when a
    # worker first imports it, and must find the shared folder then.
    server.on_startup(multiprocess.prepare)
    return server


STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def stop_signals_end_this_process() -> None:
    """Let SIGTERM end this worker at once, and leave SIGINT to the main process.

    A worker starts with the main process's handlers, which would only set a
    flag here: SIGTERM while Django loads would be lost, and the worker killed
    after KINDLER_GRACEFUL_TIMEOUT. granian puts in its own handlers once the
    application is loaded; until then SIGTERM ends the worker.

    Ctrl-C sends SIGINT to the whole process group, the workers included, just
    as the main process sends them SIGTERM. A worker given both at once
    sometimes never acted on either and was killed after
    KINDLER_GRACEFUL_TIMEOUT (10 s). The main process's SIGTERM alone stops a
    worker, so a worker never takes SIGINT; threads started from here on
    (granian's, Django's) inherit that.
    """
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def hold_stop_signals_across_fork() -> None:
    """Make every worker forked from here on end at a SIGTERM sent the moment it exists.

    Between fork() and the worker's first line of Python, the main process's
    handler is the worker's: a SIGTERM landing then set a flag in the
    worker's copy of the server and was lost, and the worker served on until
    killed after KINDLER_GRACEFUL_TIMEOUT. So the stop signals are blocked
    across fork(): a worker is born with them pending, not handled, and takes
    them only once SIGTERM would end it. The main process takes its own at
    once after the fork.
    """
    masks: list[set[int | signal.Signals]] = []

    def block() -> None:
        masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS))

    def restore() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, masks.pop())

    def in_worker() -> None:
        masks.clear()
        stop_signals_end_this_process()

    os.register_at_fork(before=block, after_in_parent=restore, after_in_child=in_worker)


def load_application(target: str) -> Any:
    """Return the ASGI application target names, loaded in a worker."""
    # Again for a worker that was not forked (multiprocessing's "spawn").
    stop_signals_end_this_process()
    module, _, name = target.partition(":")
    application = getattr(importlib.import_module(module), name)
    # Loading the application set Django up. Before the first request, a new
    # instance's SQLite file gets its tables: never a 500 behind a 200 health.
    # Imported here, not at the top: importing it in the main process would
    # load prometheus-client before multiprocess.prepare() names its folder,
    # and every worker would keep its figures to itself.
    from kindler.db.sync.prepare import prepare_sqlite

    prepare_sqlite()
    return application


def main() -> None:
    """Serve until SIGTERM or SIGINT; exit with a one-line message on a bad setting."""
    try:
        server = build()
        # granian would stop with a Rust backtrace instead.
        can_listen(server.bind_addr, server.bind_port)
    except ValueError as error:
        raise SystemExit(f"kindler.webserver: {error}") from None
    # What the server and its workers write (the metrics files, an access log
    # file) is the instance's own, as everything beside the SQLite file is.
    os.umask(0o077)
    # A WSGI server copies the environment into every request's environ,
    # where a variable named HTTP_* reads as a header the client sent.
    for name in [name for name in os.environ if name.startswith("HTTP_")]:
        del os.environ[name]
    hold_stop_signals_across_fork()
    server.serve(target_loader=load_application)


if __name__ == "__main__":
    main()
