"""Error pages in the site's style, and JSON errors under /api/."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader

API_PREFIX = "/api/"


def is_api(request: HttpRequest) -> bool:
    """Return True when the request is for the JSON API."""
    return request.path.startswith(API_PREFIX)


def json_error(status: int, detail: object) -> JsonResponse:
    """Return the API's error shape: {"detail": ...} with the given status."""
    return JsonResponse({"detail": detail}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer a malformed request without echoing what was wrong with it."""
    if is_api(request):
        return json_error(400, "Bad request")
    return render(request, "400.html", status=400)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer a refused request, with the reason the code refusing gave, if any."""
    if is_api(request):
        return json_error(403, "Forbidden")
    return render(request, "403.html", {"reason": str(exception)}, status=403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer a request for a page that does not exist."""
    if is_api(request):
        return json_error(404, "Not found")
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """Answer an unexpected failure, revealing nothing about its cause."""
    if is_api(request):
        return json_error(500, "Internal server error")
    # No RequestContext: whatever failed may be what a context processor needs.
    return HttpResponse(loader.get_template("500.html").render(), status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """Explain a refused form submission in words a person can act on."""
    if is_api(request):
        return json_error(403, f"CSRF check failed: {reason}")
    return render(request, "403_csrf.html", status=403)
