"""Project-wide views: the public health check and the System page."""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from kindler import __version__
from kindler.db import samples, telemetry
from kindler.db.failover.middleware import serves_without_database
from kindler.db.pictures import system_charts
from kindler.db.status import connections_context, database_status
from kindler.metrics import app_tables
from kindler.sections import read_sections


@serves_without_database
@login_not_required
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Report whether Kindler is healthy; its databases only to a signed-in caller or token.

    503 when nothing can be served (PostgreSQL-only mode, PostgreSQL down), so
    load balancers and orchestrators take the instance out of rotation.
    """
    status = database_status()
    code = 503 if status.unavailable else 200
    if not shows_details(request):
        # Versions, hosts and counts tell a stranger what to attack; whether
        # to send traffic here is all a probe needs.
        return JsonResponse({"status": status.health}, status=code)
    database = status.as_json()
    if status.failover.configured:
        database["connections"] = status.connections_as_json()
    body: dict[str, Any] = {
        "status": status.health,
        "service": "kindler",
        "version": __version__,
        "database": database,
    }
    for section in read_sections():
        body[section.key] = section.data
    return JsonResponse(body, status=code)


def shows_details(request: HttpRequest) -> bool:
    """Return True for a signed-in caller or one with the API token (not for the public)."""
    if request.user.is_authenticated:
        return True
    token = str(settings.KINDLER_API_TOKEN)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given, token)


@require_safe
def system(request: HttpRequest) -> HttpResponse:
    """Show the database, query, switch and sync figures for people."""
    status = database_status()
    context = {
        "status": status,
        **telemetry.report(status.failover),
        "tables": app_tables(),
        "pictures": system_charts(status.failover, status.switches, samples.samples()),
        "sections": read_sections(),
        "pool": connections_context(status),
    }
    return render(request, "db/system.html", context)


@login_not_required
@require_safe
def auth_check(request: HttpRequest) -> HttpResponse:
    """Answer 204 to a signed-in session and 401 otherwise, for a proxy's auth_request."""
    # A reverse proxy in front of the original web UI asks this before it
    # serves the app, and sends a signed-out browser to the sign-in page.
    response = HttpResponse(status=204 if request.user.is_authenticated else 401)
    response["Cache-Control"] = "no-store"
    return response
