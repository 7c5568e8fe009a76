"""WSGI entry point (kindler.asgi runs it once a request's body is in)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kindler.settings")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


# What the server fills in from the request itself; never dropped.
REQUEST_KEYS = frozenset(
    {
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
    }
)


def without_process_environment(app: WSGIApp, process: Mapping[str, str]) -> WSGIApp:
    """Return app, handed each request's environ without the server's own variables.

    granian's WSGI interface starts every request's environ from a copy of the
    process environment: the database password and the API token would otherwise sit
    in every request.META. Headers (HTTP_*) are left alone: kindler.webserver
    keeps variables of that name away from its workers, where they would pass
    for headers the client never sent.
    """
    inherited = {
        key: value
        for key, value in process.items()
        if not key.startswith("HTTP_") and key not in REQUEST_KEYS
    }

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        for key, value in inherited.items():
            if environ.get(key) == value:
                del environ[key]
        return app(environ, start_response)

    return application


django_application = get_wsgi_application()
# For a WSGI server that copies the process environment into requests.
application = without_process_environment(django_application, os.environ)
