"""Django's CSRF protection, also under the names axios uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, HttpResponseForbidden
from django.middleware import csrf
from django.utils.cache import patch_cache_control, patch_vary_headers


class CsrfViewMiddleware(csrf.CsrfViewMiddleware):
    """Hand out the CSRF secret in axios's cookie too, and accept it from axios's header.

    Single-page clients built on axios (the original Kindler web UI among
    them) read the token from the XSRF-TOKEN cookie and send it back as
    X-XSRF-TOKEN. Only the names differ: it is the same secret as the
    csrftoken cookie, checked the same way, after the same Origin and
    Referer checks.
    """

    def process_view(
        self,
        request: HttpRequest,
        callback: Callable[..., Any],
        callback_args: Any,
        callback_kwargs: Any,
    ) -> HttpResponseForbidden | None:
        meta = request.META
        axios_header = settings.KINDLER_XSRF_HEADER_NAME
        if settings.CSRF_HEADER_NAME not in meta and axios_header in meta:
            meta[settings.CSRF_HEADER_NAME] = meta[axios_header]
        return super().process_view(request, callback, callback_args, callback_kwargs)

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        response = super().process_response(request, response)
        secret = request.META.get("CSRF_COOKIE")
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
