"""A limit on failed sign-ins and API token guesses, per client address and per account.

After MAX_FAILURES failures within WINDOW_SECONDS from one address (or for one
username), further attempts are answered 429 with Retry-After until the window
that began with the first failure ends, even with the right password. Counts
live in Django's default cache: files beside the SQLite file, shared by every
worker process of an instance, so the limit holds for the instance as a whole.
A count is read, changed and written back under an exclusive file lock, so
failures that arrive at once in several processes are all counted.

Every API request with a token asks first, so the common answer (no
failure anywhere lately) costs one stat() of a marker file that each
failure touches, not a cache read.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.urls import reverse

MAX_FAILURES = 10
WINDOW_SECONDS = 300
TOO_MANY = "Too many failed attempts; try again in {seconds} s."
FILE_CACHE = "django.core.cache.backends.filebased.FileBasedCache"
# Within one process the file lock is not enough: flock locks belong to the
# open file, and each thread opens its own.
_thread_lock = threading.Lock()


def _key(scope: str, value: str) -> str:
    return f"kindler:failures:{scope}:{value}"


def client_address(request: HttpRequest) -> str:
    """Return the address the request came from (the proxy's, behind one)."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def _scopes(request: HttpRequest, username: str | None) -> list[str]:
    keys = [_key("address", client_address(request))]
    if username:
        keys.append(_key("account", username.strip().lower()[:150]))
    return keys


def retry_after(request: HttpRequest, username: str | None = None) -> int:
    """Return how many seconds until the request may try again; 0 when it may now."""
    now = time.time()
    if not _failed_lately(now):
        return 0
    wait = 0.0
    for key in _scopes(request, username):
        count, started = cache.get(key, (0, now))
        if count >= limit():
            wait = max(wait, started + window() - now)
    return max(0, int(wait + 0.999))


def record_failure(request: HttpRequest, username: str | None = None) -> None:
    """Count one failed attempt against the request's address and the username."""
    with _counting():
        # Before the counts: a reader that finds the marker old finds no count.
        marker = marker_path()
        if marker is not None:
            marker.touch(mode=0o600)
        now = time.time()
        for key in _scopes(request, username):
            count, started = cache.get(key, (0, now))
            if now - started >= window():
                count, started = 0, now
            cache.set(key, (count + 1, started), timeout=int(started + window() - now) + 1)


def marker_path() -> Path | None:
    """Return the file each failure touches, when the counts are files (the default)."""
    backend = settings.CACHES["default"]
    if backend["BACKEND"] != FILE_CACHE:
        return None
    return _marker_in(str(backend["LOCATION"]))


@functools.lru_cache(maxsize=16)
def _marker_in(folder: str) -> Path:
    # Every request with a token looks at the marker: building its Path each
    # time cost more than the stat. Keyed on the setting, which tests change.
    return Path(folder) / "failures.latest"


def _failed_lately(now: float) -> bool:
    """Return False only when no failure at all was counted within the window."""
    marker = marker_path()
    if marker is None:
        return True  # another cache: read the counts
    try:
        latest = os.stat(marker).st_mtime
    except FileNotFoundError:
        return False
    return now - latest < window()


@contextmanager
def _counting() -> Iterator[None]:
    """Hold the instance's lock on the counts (a file in the cache folder, when file-based)."""
    with _thread_lock:
        backend = settings.CACHES["default"]
        if backend["BACKEND"] != FILE_CACHE:
            yield
            return
        folder = Path(str(backend["LOCATION"]))
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(folder / "counts.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def limit() -> int:
    return int(getattr(settings, "KINDLER_MAX_FAILED_ATTEMPTS", MAX_FAILURES))


def window() -> float:
    return float(getattr(settings, "KINDLER_FAILED_ATTEMPTS_WINDOW", WINDOW_SECONDS))


def too_many_json(seconds: int) -> JsonResponse:
    """Return the API's 429 with Retry-After."""
    response = JsonResponse({"detail": TOO_MANY.format(seconds=seconds)}, status=429)
    response["Retry-After"] = str(seconds)
    return response


@receiver(user_login_failed)
def count_failed_login(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """Count a wrong password against the address and the account."""
    if request is not None:
        record_failure(request, credentials.get("username"))


class LoginThrottleMiddleware:
    """Answer 429 to a sign-in while its address or account has failed too often."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method == "POST" and request.path in self._login_paths():
            seconds = retry_after(request, request.POST.get("username"))
            if seconds:
                reason = TOO_MANY.format(seconds=seconds)
                response: HttpResponse = render(request, "429.html", {"reason": reason}, status=429)
                response["Retry-After"] = str(seconds)
                return response
        return self.get_response(request)

    @staticmethod
    def _login_paths() -> set[str]:
        return {reverse(settings.LOGIN_URL), reverse("admin:login")}
