"""Serve each request from one database, and answer every database fault it meets.

Changes run in one transaction on the request's alias. What each fault gets:

- The connection lost before the commit: nothing was saved there, so the
  request runs again once on a fresh connection. When that fails too (or no
  fresh connection opens), the health probe decides: PostgreSQL lost,
  read-only or unmigrated, the instance falls back and the request runs
  again on SQLite (where the change is journaled); PostgreSQL still usable,
  a 503 asking to retry. One ended backend never switches the instance.
- PostgreSQL lost during the commit itself: the outcome is unknown, so the
  person gets a 503 asking them to check and retry (and the probe decides
  whether the instance falls back).
- A statement or lock timeout (a row or table someone holds locked): the
  server is up, so this is no outage; nothing was saved, 503 "busy".
- SQLite refused the write because the instance just went back to
  PostgreSQL (see kindler.db.failover.state): the request runs again there.
- SQLite locked by another program, its disk full, or the file read-only:
  nothing was saved (the transaction rolled back), 503 saying which.
- With several PostgreSQL servers listed (PG_HOST=a,b), the fresh connection
  is opened by libpq on whichever server takes writes now (a promoted
  standby): the request runs again there, and the instance falls back only
  when no listed server takes writes.
- PostgreSQL on a schema newer than this code (kindler.db.failover.schema):
  every change gets a 503 saying to upgrade the instance; reads are served
  from SQLite.
- PostgreSQL-only mode (KINDLER_FALLBACK=off): while no PostgreSQL takes
  writes every request gets a 503 saying so, except views marked
  serves_without_database (/api/health); a request that loses PostgreSQL
  midway gets the same 503 instead of running again on SQLite.

The longest a request waits is KINDLER_REQUEST_DEADLINE, for all its waits
together: connecting (PG_CONNECT_TIMEOUT at most), each statement
(PG_STATEMENT_TIMEOUT + 1 s client margin at most), a fresh connection and
the probe after a lost one, SQLite's write lock (SQLITE_BUSY_TIMEOUT at most).
Past it the request answers 503 "PostgreSQL is too slow" and its transaction
is rolled back (its connection is cut, so PostgreSQL aborts it). The commit
itself is sent only with a round trip of the deadline left, and then awaited
(kindler.db.failover.timeouts.commit_in_time), so "too slow" never leaves a
change half-known. A request past its deadline never makes the instance fall
back (only the probe decides that).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import Resolver404, resolve

from kindler.db import POSTGRES, SQLITE
from kindler.db.failover import state, timeouts
from kindler.db.failover.errors import (
    PostgreSQLUnavailable,
    describe_error,
    is_commit_not_sent,
    is_cut_short,
    is_postgres_busy,
    is_postgres_outage,
    is_switched_back,
    is_too_slow,
    pool_exhausted,
    sqlite_trouble,
)
from kindler.db.failover.monitor import close_postgres_connection, monitor
from kindler.db.failover.pinning import (
    pinned,
    pinned_alias,
    postgres_configured,
    sqlite_fallback_enabled,
)
from kindler.db.failover.routers import current_alias
from kindler.db.failover.schema import OLDER
from kindler.db.failover.writelock import write_transaction

logger = logging.getLogger("kindler.db")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ERROR_ATTRIBUTE = "_kindler_database_error"
UNCERTAIN_WRITE = (
    "PostgreSQL went away while this change was being committed, so it may not "
    "have been saved. Check, then retry."
)
POSTGRES_ONLY = (
    "PostgreSQL cannot take writes and this Kindler runs without a local fallback "
    "(KINDLER_FALLBACK=off): nothing can be read or saved until it is back."
)
BUSY = (
    "PostgreSQL did not answer in time: a row or table this request needs is locked, "
    "or the server is overloaded. Nothing was saved; retry in a moment."
)


def too_slow_message() -> str:
    """Return the 503's words for a request past KINDLER_REQUEST_DEADLINE."""
    return (
        f"PostgreSQL is too slow: this request did not finish within "
        f"{float(settings.KINDLER_REQUEST_DEADLINE):g} s (KINDLER_REQUEST_DEADLINE). "
        "Nothing was saved; retry in a moment."
    )


class SwitchedBackError(DatabaseError):
    """The instance went back to PostgreSQL while this request waited for SQLite."""


def serves_without_database[View: Callable[..., Any]](view: View) -> View:
    """Mark a view that answers even when no database can be used (a health check)."""
    view.serves_without_database = True  # type: ignore[attr-defined]
    return view


def _serves_without_database(request: HttpRequest) -> bool:
    try:
        match = resolve(request.path_info, getattr(request, "urlconf", None))
    except Resolver404:
        return False
    return bool(getattr(match.func, "serves_without_database", False))


def is_handled(exc: BaseException | None) -> bool:
    """Return True for the database errors this middleware answers itself."""
    return (
        is_postgres_outage(exc)
        or is_postgres_busy(exc)
        or is_switched_back(exc)
        or sqlite_trouble(exc) is not None
        or isinstance(exc, SwitchedBackError)
    )


def remember_database_error(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """Note on the request the database error it failed with.

    Connected to got_request_exception: Django turns exceptions into 500
    responses in whichever middleware they happen, so this is the one place
    that sees them all, including lazy user loading in auth middleware.
    """
    exc = sys.exc_info()[1]
    if request is not None and is_handled(exc):
        setattr(request, ERROR_ATTRIBUTE, exc)


class HandledFailoverFilter(logging.Filter):
    """Drop Django's 500 log line for a request this middleware answered itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        return not hasattr(request, ERROR_ATTRIBUTE)


class DatabaseFailoverMiddleware:
    """Pin each request to one alias and turn database faults into defined answers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not postgres_configured():
            return self._serve(request)
        # One deadline for every wait of the request, PostgreSQL's and then
        # SQLite's write lock: however many round trips it makes.
        with timeouts.request_deadline(float(settings.KINDLER_REQUEST_DEADLINE)):
            return self._serve(request)

    def _serve(self, request: HttpRequest) -> HttpResponse:
        # A caller that pinned an alias on purpose (a test, or code serving a
        # request from one database) keeps it, whatever the state says.
        follow_state = pinned() is None and postgres_configured()
        try:
            alias: str | None = current_alias()
        except PostgreSQLUnavailable as exc:
            return self._without_database(request, str(exc))
        writes = request.method not in SAFE_METHODS
        if writes and follow_state and monitor.upgrade_required():
            # PostgreSQL holds a schema this code does not know: a write here
            # could be wrong there, and journaling it would only defer that.
            logger.warning("Answered 503 on %s %s: %s", request.method, request.path, OLDER)
            return unavailable(request, OLDER)
        if alias == SQLITE and follow_state and writes and state.promotion_pending():
            # Step aside while the switch back takes SQLite's write lock;
            # afterwards the write goes wherever the instance is then.
            left = timeouts.request_time_left()
            wait = float(settings.SQLITE_BUSY_TIMEOUT)
            state.wait_for_promotion(wait if left is None else max(0.0, min(wait, left)))
            alias = current_alias()
        # A connection is not checked first (no SELECT 1 per request: the
        # monitor probes PostgreSQL off the request path); if the server
        # dropped it, the request runs again once on a fresh connection
        # before anyone calls it an outage.
        if alias == SQLITE and postgres_configured():
            # Fallen back: keep no idle connection that would hold one of
            # PostgreSQL's slots (it may be out of them).
            close_postgres_connection()
        elif alias == POSTGRES and request.method not in SAFE_METHODS:
            try:
                alias = self._connect_or_fall_back()
            except DatabaseError as exc:
                # Out of pooled connections or time, or PostgreSQL refused a
                # connection although the probe finds it usable: nothing was sent.
                if not is_handled(exc):
                    raise
                return self._answer(request, POSTGRES, exc, False)
        if alias is None:
            return unavailable(request, monitor.unavailable() or POSTGRES_ONLY)
        tried: list[str] = []
        while True:
            response, error, at_commit = self._attempt(request, alias, follow_state)
            if error is None:
                return response
            tried.append(alias)
            retry = self._retry_alias(alias, error, at_commit, tried)
            if retry is None:
                return self._answer(request, alias, error, at_commit)
            # The user may have been loaded in the failed attempt; load it again
            # so nothing is written back through a connection that failed.
            for cached in ("_cached_user", "_acached_user"):
                request.__dict__.pop(cached, None)
            alias = retry

    def _without_database(self, request: HttpRequest, why: str) -> HttpResponse:
        if not _serves_without_database(request):
            logger.warning("Answered 503 on %s %s: %s", request.method, request.path, why)
            return unavailable(request, why)
        with pinned_alias(POSTGRES):
            return self.get_response(request)

    def _attempt(
        self, request: HttpRequest, alias: str, follow_state: bool
    ) -> tuple[HttpResponse, BaseException | None, bool]:
        """Run the request on alias; return the response, a handled error, and if at commit."""
        if hasattr(request, ERROR_ATTRIBUTE):
            delattr(request, ERROR_ATTRIBUTE)
        try:
            response = self._respond(request, alias, follow_state)
        except DatabaseError as exc:
            if not is_handled(exc):
                raise
            setattr(request, ERROR_ATTRIBUTE, exc)
            return HttpResponse(status=503), exc, True
        error = getattr(request, ERROR_ATTRIBUTE, None)
        if error is not None and response.status_code < 500:
            # Handled inside the view (it answered anyway): nothing to do.
            delattr(request, ERROR_ATTRIBUTE)
            error = None
        return response, error, False

    def _respond(self, request: HttpRequest, alias: str, follow_state: bool) -> HttpResponse:
        with pinned_alias(alias):
            if request.method in SAFE_METHODS:
                return self.get_response(request)
            rolled_back = False
            try:
                with self._transaction(alias, follow_state):
                    response = self.get_response(request)
                    if response.status_code >= 500 or hasattr(request, ERROR_ATTRIBUTE):
                        transaction.set_rollback(True, using=alias)
                        rolled_back = True
            except DatabaseError as exc:
                # Leaving a rolled-back block reconnects to restore autocommit,
                # which fails while PostgreSQL is away; nothing was committed.
                if not (rolled_back and is_handled(exc)):
                    raise
                if not hasattr(request, ERROR_ATTRIBUTE):
                    setattr(request, ERROR_ATTRIBUTE, exc)
                return HttpResponse(status=503)
            return response

    def _transaction(self, alias: str, follow_state: bool) -> AbstractContextManager[None]:
        if alias != SQLITE:
            return transaction.atomic(using=alias)
        # SQLite's write lock is taken at the first write, not here, and
        # writers take turns for it (kindler.db.failover.writelock).
        check = self._refuse_if_switched_back if follow_state else _nothing
        return write_transaction(connections[SQLITE], on_begin=check)

    @staticmethod
    def _refuse_if_switched_back() -> None:
        # Inside the transaction SQLite's write lock is held, so the state
        # read here cannot change before this request commits.
        if monitor.active_alias() == POSTGRES:
            raise SwitchedBackError("the instance is back on PostgreSQL")

    def _retry_alias(
        self, alias: str, error: BaseException, at_commit: bool, tried: list[str]
    ) -> str | None:
        left = timeouts.request_time_left()
        if left is not None and left <= 0:
            return None  # past the deadline: no second attempt, anywhere
        if alias == POSTGRES and is_postgres_outage(error):
            cause = f"request failed: {describe_error(error)}"
            if not at_commit and tried.count(POSTGRES) == 1:
                try:
                    self._reconnect()
                    return POSTGRES
                except DatabaseError as exc:
                    # A fresh connection that fails is what a probe would find.
                    down = _fell_back(cause, exc)
            else:
                down = monitor.confirm_outage(cause)
            if not down or at_commit or SQLITE in tried or not sqlite_fallback_enabled():
                return None
            return SQLITE
        if (
            alias == SQLITE
            and POSTGRES not in tried
            and (isinstance(error, SwitchedBackError) or is_switched_back(error))
        ):
            return POSTGRES
        return None

    @staticmethod
    def _reconnect() -> None:
        """Open a fresh connection, or raise DatabaseError when PostgreSQL does not take it.

        The failed one may have been ended alone (pg_terminate_backend, a
        proxy's idle timeout, a kept connection the server dropped), and with
        several servers listed libpq opens the new one on whichever takes
        writes now. Nothing of the failed attempt was committed.
        """
        if monitor.active_alias() != POSTGRES:
            raise PostgreSQLLeft("the instance left PostgreSQL meanwhile")
        close_postgres_connection()
        connections[POSTGRES].ensure_connection()

    def _connect_or_fall_back(self) -> str | None:
        # Connecting sends nothing: a change that cannot even connect is
        # certain not to have reached PostgreSQL, and goes to SQLite instead
        # (or, in PostgreSQL-only mode, nowhere: None).
        try:
            connections[POSTGRES].ensure_connection()
        except DatabaseError as exc:
            if not is_postgres_outage(exc):
                raise
            if not _fell_back(f"request failed: {describe_error(exc)}", exc):
                raise
            return SQLITE if sqlite_fallback_enabled() else None
        return POSTGRES

    def _answer(
        self, request: HttpRequest, alias: str, error: BaseException, at_commit: bool
    ) -> HttpResponse:
        exhausted = pool_exhausted(error)
        left = timeouts.request_time_left()
        late = is_too_slow(error) or (left is not None and left <= 0)
        if alias == POSTGRES and exhausted is not None:
            message = exhausted
        elif alias == POSTGRES and late:
            uncertain = at_commit and not is_commit_not_sent(error)
            message = UNCERTAIN_WRITE if uncertain else too_slow_message()
        elif alias == POSTGRES and is_postgres_busy(error):
            message = BUSY
        elif alias == POSTGRES and is_postgres_outage(error):
            message = UNCERTAIN_WRITE if at_commit else _unavailable_message(error)
            if not at_commit and not sqlite_fallback_enabled():
                message = monitor.unavailable() or POSTGRES_ONLY
        else:
            message = sqlite_trouble(error) or _unavailable_message(error)
        logger.warning("Answered 503 on %s %s: %s", request.method, request.path, message)
        return unavailable(request, message)


class PostgreSQLLeft(DatabaseError):
    """The instance is off PostgreSQL already: no fresh connection is tried."""


def _fell_back(cause: str, exc: DatabaseError) -> bool:
    """Fall back after a new connection failed; return whether the instance is off PostgreSQL.

    The failed connection is the probe's own test, so the instance falls back
    at once, unless the new connection was ended as it started (not refused):
    that is one backend, and a probe decides.
    """
    if isinstance(exc, PostgreSQLLeft):
        return True
    if is_cut_short(exc):
        return monitor.confirm_outage(cause)
    monitor.mark_down(cause)
    return True


def _nothing() -> None:
    """Check nothing when a write transaction begins (no state to follow)."""


def _unavailable_message(error: BaseException) -> str:
    return f"The database cannot be used right now ({describe_error(error)}); retry in a moment."


def unavailable(request: HttpRequest, message: str) -> HttpResponse:
    """Return a 503 that says message: JSON for the API, the site's page elsewhere."""
    if request.path.startswith("/api/") or "json" in request.headers.get("Accept", ""):
        return JsonResponse({"detail": message}, status=503)
    response = TemplateResponse(request, "503.html", {"message": message}, status=503)
    return response.render()
