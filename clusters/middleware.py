"""Django's CSRF protection under axios's names, the token API's short path, and URL checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.models import AnonymousUser
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.utils.cache import patch_cache_control, patch_vary_headers

from clusters.errors import is_api, json_error

NUL_IN_URL = "The URL contains a NUL character (%00), which no name or value may hold."


class AxiosCsrfNamesMiddleware:
    """Hand out the CSRF secret in axios's cookie too, and accept it from axios's header.

    Single-page clients built on axios (the original Kindler web UI among
    them) read the token from the XSRF-TOKEN cookie and send it back as
    X-XSRF-TOKEN. Only the names differ: it is the same secret as the
    csrftoken cookie, checked by Django's own CsrfViewMiddleware (which
    stays in MIDDLEWARE, right after this one, so `check --deploy` still
    sees it), after the same Origin and Referer checks.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        meta = request.META
        axios_header = settings.KINDLER_XSRF_HEADER_NAME
        if settings.CSRF_HEADER_NAME not in meta and axios_header in meta:
            meta[settings.CSRF_HEADER_NAME] = meta[axios_header]
        response = self.get_response(request)
        secret = meta.get("CSRF_COOKIE")
        name = settings.KINDLER_XSRF_COOKIE_NAME
        if secret is not None and request.COOKIES.get(name) != secret:
            response.set_cookie(
                name,
                secret,
                max_age=settings.CSRF_COOKIE_AGE,
                domain=settings.CSRF_COOKIE_DOMAIN,
                path=settings.CSRF_COOKIE_PATH,
                secure=settings.CSRF_COOKIE_SECURE,
                # Script must read it: that is how axios finds the token.
                httponly=False,
                samesite=settings.CSRF_COOKIE_SAMESITE,
            )
            patch_vary_headers(response, ("Cookie",))
        return response


class TokenApiMiddleware:
    """Send API requests that carry a bearer token past the browser's middleware.

    Such a request is authenticated by its token alone (clusters.api): it
    has no session to load, no CSRF cookie to check or hand out, no messages
    and no signed-in page to keep out of caches, so the middleware below
    this one in MIDDLEWARE has nothing to do for it, yet cost about a sixth
    of an API read (a GET in one process: 0.66 ms with it, 0.54 without).
    It is answered by Django's own view handling instead, with an anonymous
    user and LoginRequiredMiddleware's check, so a view that needs a
    signed-in person still refuses it. Everything above this middleware
    (metrics, security headers, the failover middleware) still applies, and
    what the skipped middleware does that matters to a token answer is done
    here: the Host check (CommonMiddleware's) and no-store (a token answer
    is as private as a signed-in page).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.respond_to_token = _TokenRequestHandler().respond

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        authorization = request.META.get("HTTP_AUTHORIZATION", "")
        if is_api(request) and authorization[:7].lower() == "bearer ":
            request.user = AnonymousUser()
            response = self.respond_to_token(request)
            # As CommonMiddleware, skipped here, would: without it the server
            # sends the body chunked.
            if isinstance(response, HttpResponse) and not response.has_header("Content-Length"):
                response["Content-Length"] = str(len(response.content))
            patch_cache_control(response, no_store=True, private=True)
            return response
        return self.get_response(request)


class _TokenRequestHandler(BaseHandler):
    """Django's view handling (URL resolution, view middleware, errors) for token requests.

    BaseHandler.load_middleware would build the chain from MIDDLEWARE; this
    sets up the same lists with only the login check. (django-stubs leaves
    the handler's internals out, hence the ignores.)
    """

    def __init__(self) -> None:
        super().__init__()
        view = self._get_response  # type: ignore[attr-defined]
        self._view_middleware = [LoginRequiredMiddleware(view).process_view]
        self._template_response_middleware: list[Callable[..., Any]] = []
        self._exception_middleware: list[Callable[..., Any]] = []

        def checked_view(request: HttpRequest) -> HttpResponseBase:
            # CommonMiddleware's Host check: DisallowedHost becomes a 400 below.
            request.get_host()
            return cast(HttpResponseBase, view(request))

        # Exceptions become responses (a 400, 404, handler500) as in the full stack.
        self.respond = cast(
            Callable[[HttpRequest], HttpResponseBase], convert_exception_to_response(checked_view)
        )


class NoStoreMiddleware:
    """Keep pages shown to a signed-in person out of browser and proxy caches."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            patch_cache_control(response, no_store=True, private=True)
        return response


class NulCharacterMiddleware:
    """Answer 400 to a URL with a NUL character in its path or query string.

    PostgreSQL's text cannot hold one, so a name taken from such a URL would
    fail the query itself instead of matching nothing; no name or value
    Kindler keeps contains one.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if "\x00" in request.path or _nul_in_query(request):
            if is_api(request):
                return json_error(400, NUL_IN_URL)
            return render(request, "400.html", {"reason": NUL_IN_URL}, status=400)
        return self.get_response(request)


def _nul_in_query(request: HttpRequest) -> bool:
    # Parsing the query string costs about 9 µs a request; a NUL can only
    # reach a decoded key or value as %00 (or raw), so most never need it.
    raw = request.META.get("QUERY_STRING", "")
    if "%00" not in raw and "\x00" not in raw:
        return False
    return any("\x00" in text for key, values in request.GET.lists() for text in (key, *values))
