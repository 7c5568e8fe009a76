"""Serve each request from one database, and survive losing PostgreSQL mid-request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

from kindler.db import POSTGRES, SQLITE
from kindler.db.errors import describe, is_postgres_outage
from kindler.db.routing import current_alias, pinned_alias

logger = logging.getLogger("kindler.db")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OUTAGE_ATTRIBUTE = "_kindler_postgres_outage"
UNCERTAIN_WRITE = (
    "PostgreSQL went away while this change was being committed, so it may not "
    "have been saved. Check, then retry."
)


def remember_outage(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """Note on the request that it failed because PostgreSQL went away.

    Connected to got_request_exception: Django turns exceptions into 500
    responses in whichever middleware they happen, so this is the one place
    that sees them all, including lazy user loading in auth middleware.
    """
    import sys

    exc = sys.exc_info()[1]
    if request is not None and is_postgres_outage(exc):
        setattr(request, OUTAGE_ATTRIBUTE, exc)


class HandledFailoverFilter(logging.Filter):
    """Drop Django's 500 log line for a request that was answered from SQLite."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        return not hasattr(request, OUTAGE_ATTRIBUTE)


class DatabaseFailoverMiddleware:
    """Pin each request to one alias; on losing PostgreSQL, answer from SQLite.

    Changes run in one transaction on the request's alias. When PostgreSQL
    goes away before that transaction commits, nothing was saved there, so
    the request is run again on SQLite (where the change is journaled). Only
    a failure during the commit itself leaves the outcome unknown: that
    request gets a 503 asking the person to check and retry.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        alias = current_alias()
        if alias == POSTGRES and request.method not in SAFE_METHODS:
            alias = self._connect_or_fall_back()
        try:
            response = self._respond(request, alias)
        except DatabaseError as exc:
            if alias != POSTGRES or not is_postgres_outage(exc):
                raise
            self._mark_down(exc)
            return self._unavailable(request)
        outage = getattr(request, OUTAGE_ATTRIBUTE, None)
        if alias != POSTGRES or outage is None:
            return response
        self._mark_down(outage)
        delattr(request, OUTAGE_ATTRIBUTE)
        # The user may have been loaded from PostgreSQL in the failed attempt;
        # load it again from SQLite so nothing is written back to the wrong place.
        for cached in ("_cached_user", "_acached_user"):
            request.__dict__.pop(cached, None)
        return self._respond(request, SQLITE)

    def _respond(self, request: HttpRequest, alias: str) -> HttpResponse:
        with pinned_alias(alias):
            if request.method in SAFE_METHODS:
                return self.get_response(request)
            rolled_back = False
            try:
                with transaction.atomic(using=alias):
                    response = self.get_response(request)
                    if response.status_code >= 500 or hasattr(request, OUTAGE_ATTRIBUTE):
                        transaction.set_rollback(True, using=alias)
                        rolled_back = True
            except DatabaseError as exc:
                # Leaving a rolled-back block reconnects to restore autocommit,
                # which fails while PostgreSQL is away; nothing was committed.
                if not (rolled_back and is_postgres_outage(exc)):
                    raise
                setattr(request, OUTAGE_ATTRIBUTE, exc)
            return response

    def _connect_or_fall_back(self) -> str:
        # Connecting sends nothing: a change that cannot even connect is
        # certain not to have reached PostgreSQL, and goes to SQLite instead.
        try:
            connections[POSTGRES].ensure_connection()
        except DatabaseError as exc:
            if not is_postgres_outage(exc):
                raise
            self._mark_down(exc)
            return SQLITE
        return POSTGRES

    @staticmethod
    def _mark_down(exc: BaseException) -> None:
        from kindler.db.health import monitor

        monitor.mark_down(f"request failed: {describe(exc)}")

    @staticmethod
    def _unavailable(request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/") or "json" in request.headers.get("Accept", ""):
            return JsonResponse({"detail": UNCERTAIN_WRITE}, status=503)
        response = TemplateResponse(request, "503.html", {"message": UNCERTAIN_WRITE}, status=503)
        return response.render()
