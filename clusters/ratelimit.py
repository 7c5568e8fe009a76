"""Limits on failed sign-ins and API token guesses, designed so nobody can turn them on others.

Three counts, after OWASP's guidance and what django-axes and device cookies do:

- **per account and address**: KINDLER_MAX_FAILED_ATTEMPTS failures within the
  window refuse that address further sign-ins to that account (429 with
  Retry-After) until the window that began with its first failure ends;
- **per address**: KINDLER_MAX_FAILED_ADDRESS_ATTEMPTS failures, whatever the
  accounts, refuse that address further sign-ins the same way;
- **per account**, from every address: past KINDLER_MAX_FAILED_ATTEMPTS the
  account is slowed, never locked: one attempt is let through per delay,
  doubling with each further failure up to KINDLER_FAILED_ATTEMPTS_MAX_DELAY.

A browser that signed in to an account before carries a signed device cookie:
for that account it is counted on its own (per account and device), and
neither the address's count nor the account's slowing applies to it, so
failures from elsewhere (the same proxy address included) never keep the
owner out. The account is the name as authentication sees it: stripped and
NFKC-normalised (Django's UsernameField), case kept, as the User lookup does.

A valid API token is never refused for failures of any kind; wrong tokens are
counted per address on their own and answered 429 past the limit.

Counts live in Django's default cache: files beside the SQLite file, shared by
every worker process of an instance. A count is read, changed and written
back under an exclusive file lock, so failures that arrive at once in several
processes are all counted. The common answer (no failure anywhere lately)
costs one stat() of a marker file that each failure touches, not a cache read.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.forms import UsernameField
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core import signing
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.urls import reverse

MAX_FAILURES = 10
MAX_ADDRESS_FAILURES = 100
WINDOW_SECONDS = 300
MAX_DELAY_SECONDS = 60
TOO_MANY = "Too many failed attempts; try again in {seconds} s."
FILE_CACHE = "django.core.cache.backends.filebased.FileBasedCache"
DEVICE_COOKIE = "kindler_device"
DEVICE_SALT = "kindler.ratelimit.device"
DEVICE_MAX_AGE = 365 * 24 * 3600
# Within one process the file lock is not enough: flock locks belong to the
# open file, and each thread opens its own.
_thread_lock = threading.Lock()


def count_key(scope: str, value: str) -> str:
    # Hashed: an account name may hold any character, and cache keys may not.
    return f"kindler:failures:{scope}:{hashlib.sha256(value.encode()).hexdigest()}"


def account_name(raw: str | None) -> str:
    """Return the account a sign-in names, as authentication sees it (stripped, NFKC)."""
    return str(UsernameField(required=False).to_python(raw))


def client_address(request: HttpRequest) -> str:
    """Return the address the request came from (the proxy's, behind one)."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def device(request: HttpRequest, account: str) -> str | None:
    """Return the request's device id when its device cookie is for account, else None."""
    value = request.COOKIES.get(DEVICE_COOKIE)
    if not value or not account:
        return None
    try:
        signed = signing.loads(value, salt=DEVICE_SALT, max_age=DEVICE_MAX_AGE)
    except signing.BadSignature:
        return None
    if not isinstance(signed, dict) or signed.get("account") != count_key("account", account):
        return None
    return str(signed.get("device", "")) or None


def _counts(request: HttpRequest, account: str) -> list[tuple[str, int, bool]]:
    """Return the keys an attempt counts against: (key, limit, slows rather than refuses)."""
    if not account:
        return [(count_key("address", client_address(request)), address_limit(), False)]
    known = device(request, account)
    if known is not None:
        return [(count_key("device", f"{account}\0{known}"), limit(), False)]
    return [
        (count_key("pair", f"{account}\0{client_address(request)}"), limit(), False),
        (count_key("address", client_address(request)), address_limit(), False),
        (count_key("account", account), limit(), True),
    ]


def _read(key: str, now: float) -> tuple[int, float, float]:
    """Return a count, when its window started and its latest failure; (0, now, now) if none."""
    value = cache.get(key)
    if not isinstance(value, tuple) or len(value) < 2:
        return 0, now, now
    count, started = int(value[0]), float(value[1])
    latest = float(value[2]) if len(value) > 2 else started
    if now - started >= window():
        return 0, now, now
    return count, started, latest


def _wait(count: int, started: float, latest: float, most: int, slows: bool, now: float) -> float:
    if count < most:
        return 0.0
    if slows:
        delay = min(2.0 ** (count - most), max_delay())
        return latest + delay - now
    return started + window() - now


def retry_after(request: HttpRequest, account: str | None = None) -> int:
    """Return how many seconds until a sign-in to account may be tried; 0 when it may now."""
    now = time.time()
    if not _failed_lately(now):
        return 0
    wait = 0.0
    for key, most, slows in _counts(request, account_name(account)):
        wait = max(wait, _wait(*_read(key, now), most, slows, now))
    return max(0, math.ceil(wait))


def record_failure(request: HttpRequest, account: str | None = None) -> None:
    """Count one failed sign-in to account from the request."""
    _record(request, [key for key, _, _ in _counts(request, account_name(account))])


def token_retry_after(request: HttpRequest) -> int:
    """Return how many seconds until a wrong token's address may try again; 0 when it may now."""
    now = time.time()
    if not _failed_lately(now):
        return 0
    wait = _wait(*_read(count_key("token", client_address(request)), now), limit(), False, now)
    return max(0, math.ceil(wait))


def record_token_failure(request: HttpRequest) -> None:
    """Count one wrong API token from the request's address."""
    _record(request, [count_key("token", client_address(request))])


def _record(request: HttpRequest, keys: list[str]) -> None:
    with _counting():
        # Before the counts: a reader that finds the marker old finds no count.
        marker = marker_path()
        if marker is not None:
            marker.touch(mode=0o600)
        now = time.time()
        for key in keys:
            count, started, _ = _read(key, now)
            timeout = int(started + window() - now) + 1
            cache.set(key, (count + 1, started, now), timeout=timeout)


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


def address_limit() -> int:
    return int(getattr(settings, "KINDLER_MAX_FAILED_ADDRESS_ATTEMPTS", MAX_ADDRESS_FAILURES))


def max_delay() -> float:
    return float(getattr(settings, "KINDLER_FAILED_ATTEMPTS_MAX_DELAY", MAX_DELAY_SECONDS))


def window() -> float:
    return float(getattr(settings, "KINDLER_FAILED_ATTEMPTS_WINDOW", WINDOW_SECONDS))


def too_many_page(request: HttpRequest, seconds: int) -> HttpResponse:
    """Return the site's 429 page with Retry-After."""
    reason = TOO_MANY.format(seconds=seconds)
    response = render(request, "429.html", {"reason": reason}, status=429)
    response["Retry-After"] = str(seconds)
    return response


def too_many_json(seconds: int) -> JsonResponse:
    """Return the API's 429 with Retry-After."""
    response = JsonResponse({"detail": TOO_MANY.format(seconds=seconds)}, status=429)
    response["Retry-After"] = str(seconds)
    return response


@receiver(user_login_failed)
def count_failed_login(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """Count a wrong password against the account, its address and its device."""
    if request is not None:
        record_failure(request, credentials.get("username"))


@receiver(user_logged_in)
def remember_device(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """Mark the request: its answer carries a device cookie for the account signed in to."""
    if request is not None:
        request.kindler_device_for = account_name(user.get_username())  # type: ignore[attr-defined]


def device_cookie(account: str, known: str | None) -> str:
    """Return the signed device cookie of account (keeping the device's id when it has one)."""
    payload = {
        "account": count_key("account", account),
        "device": known or secrets.token_urlsafe(16),
    }
    return signing.dumps(payload, salt=DEVICE_SALT)


def wrong_old_password(response: HttpResponseBase) -> bool:
    """Return True when response is the password-change form refusing the old password."""
    context = getattr(response, "context_data", None) or {}
    form = context.get("form")
    return form is not None and form.has_error("old_password", "password_incorrect")


class LoginThrottleMiddleware:
    """Answer 429 to a sign-in or a password change while its counts are over their limits.

    A wrong old password on the password-change form counts as a failed sign-in
    to the account: it is the same guess.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        changing = request.method == "POST" and request.path == reverse("password_change")
        if request.method == "POST" and request.path in self._login_paths():
            seconds = retry_after(request, request.POST.get("username"))
            if seconds:
                return too_many_page(request, seconds)
        elif changing and request.user.is_authenticated:
            seconds = retry_after(request, request.user.get_username())
            if seconds:
                return too_many_page(request, seconds)
        response = self.get_response(request)
        if changing and request.user.is_authenticated and wrong_old_password(response):
            record_failure(request, request.user.get_username())
        account = getattr(request, "kindler_device_for", None)
        if account:
            response.set_cookie(
                DEVICE_COOKIE,
                device_cookie(account, device(request, account)),
                max_age=DEVICE_MAX_AGE,
                secure=settings.SESSION_COOKIE_SECURE,
                httponly=True,
                samesite="Lax",
            )
        return response

    @staticmethod
    def _login_paths() -> set[str]:
        return {reverse(settings.LOGIN_URL), reverse("admin:login")}
