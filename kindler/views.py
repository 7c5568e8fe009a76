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
    """Report whether Kindler is on PostgreSQL, and why not; public, and free of secrets.

    503 when nothing can be served (PostgreSQL-only mode, PostgreSQL down), so
    load balancers and orchestrators take the instance out of rotation.
    """
    status = database_status()
    database = status.as_json()
    details = shows_details(request)
    if not details:
        database = without_details(database)
    elif status.failover.configured:
        database["connections"] = status.connections_as_json()
    body: dict[str, Any] = {
        "status": status.health,
        "service": "kindler",
        "version": __version__,
        "database": database,
    }
    for section in read_sections():
        body[section.key] = section.data if details else section.public
    return JsonResponse(body, status=503 if status.unavailable else 200)


def shows_details(request: HttpRequest) -> bool:
    """Return True for a signed-in caller or one with the API token (not for the public)."""
    if request.user.is_authenticated:
        return True
    token = str(settings.KINDLER_API_TOKEN)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given, token)


# What the public sees instead of PostgreSQL's own words, which name hosts,
# ports, users and databases.
PUBLIC_CAUSES = {
    "primary": "PostgreSQL takes writes",
    "fallback": "PostgreSQL cannot take writes",
    "recovering": "local changes are being carried back to PostgreSQL",
    "unavailable": "no PostgreSQL takes writes",
}


def without_details(database: dict[str, Any]) -> dict[str, Any]:
    """Return the health report without error texts and addresses, for anonymous callers."""
    postgres = dict(database["postgres"])
    if postgres.get("error"):
        postgres["error"] = (
            "PostgreSQL cannot take writes"
            if postgres.get("reachable")
            else "PostgreSQL cannot be reached"
        )
    postgres["host"] = None
    postgres["hosts"] = [
        {**host, "address": None, "error": None} for host in postgres.get("hosts", [])
    ]
    cause = database.get("state_cause")
    if cause != "embedded":
        cause = PUBLIC_CAUSES.get(str(database.get("state")), cause)
    return {**database, "postgres": postgres, "state_cause": cause}


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
