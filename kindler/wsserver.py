"""The WebSocket server: granian (ASGI, WebSockets on) on KINDLER_WS_BIND, beside kindler.webserver.

Run as `python -m kindler.wsserver MODULE:APPLICATION` (`manage.py serve`
starts it with clusters.websocket's /ws/tasks). The HTTP API stays on
kindler.webserver's WSGI workers: serving both from one ASGI server runs every
Django request through Django's ASGI handler, which costs the API a third to
three quarters of its speed (docs/api.md). One worker: a socket mostly waits,
and its database reads run in threads.

Every value comes from the environment, read here: KINDLER_WS_BIND,
KINDLER_ACCESS_LOG and KINDLER_GRACEFUL_TIMEOUT (docs/configuration.md).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.server import MPServer

from kindler.webserver import (
    access_log_handler,
    can_listen,
    hold_stop_signals_across_fork,
    logging_config,
    stop_signals_end_this_process,
    whole_number,
)

DEFAULT_WS_BIND = "127.0.0.1:8001"
# Words that leave the WebSocket server out (`manage.py serve` checks them).
OFF = frozenset({"", "off", "none"})


def is_off(environ: Mapping[str, str] = os.environ) -> bool:
    """Return True when KINDLER_WS_BIND says not to serve WebSockets."""
    return environ.get("KINDLER_WS_BIND", DEFAULT_WS_BIND).strip().lower() in OFF


def split_ws_bind(bind: str) -> tuple[str, int]:
    """Return the host and the port of KINDLER_WS_BIND's `HOST:PORT`."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"KINDLER_WS_BIND must be HOST:PORT or off, got {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def build(target: str, environ: Mapping[str, str] = os.environ) -> MPServer:
    """Return the WebSocket server for the ASGI application target, as environ configures it."""
    host, port = split_ws_bind(environ.get("KINDLER_WS_BIND", DEFAULT_WS_BIND))
    access = access_log_handler(environ.get("KINDLER_ACCESS_LOG", "-"))
    return MPServer(
        target,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=True,
        workers=1,
        log_access=access is not None,
        log_dictconfig=logging_config(access),
        respawn_failed_workers=True,
        respawn_interval=1.0,
        workers_kill_timeout=whole_number(environ, "KINDLER_GRACEFUL_TIMEOUT", 10),
    )


def load_application(target: str) -> Any:
    """Set Django up in the worker, then return the ASGI application target names."""
    # As in kindler.webserver: SIGTERM ends a worker still loading, SIGINT is
    # left to the main process.
    stop_signals_end_this_process()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kindler.settings")
    import django

    django.setup(set_prefix=False)
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] = sys.argv) -> None:
    """Serve until SIGTERM or SIGINT; exit with a one-line message on a bad setting."""
    if len(argv) != 2 or ":" not in argv[1]:
        raise SystemExit("usage: python -m kindler.wsserver MODULE:APPLICATION")
    try:
        server = build(argv[1])
        can_listen(server.bind_addr, server.bind_port)
    except ValueError as error:
        raise SystemExit(f"kindler.wsserver: {error}") from None
    os.umask(0o077)
    hold_stop_signals_across_fork()
    server.serve(target_loader=load_application)


if __name__ == "__main__":
    main()
