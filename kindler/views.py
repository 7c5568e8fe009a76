"""Project-wide views: the public health check and the System page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from kindler import __version__
from kindler.db import telemetry
from kindler.db.failover.middleware import serves_without_database
from kindler.db.status import database_status
from kindler.metrics import app_tables


@serves_without_database
@login_not_required
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Report whether Kindler is on PostgreSQL, and why not; public, and free of secrets.

    503 when nothing can be served (PostgreSQL-only mode, PostgreSQL down), so
    load balancers and orchestrators take the instance out of rotation.
    """
    status = database_status()
    return JsonResponse(
        {
            "status": status.health,
            "service": "kindler",
            "version": __version__,
            "database": status.as_json(),
        },
        status=503 if status.unavailable else 200,
    )


@require_safe
def system(request: HttpRequest) -> HttpResponse:
    """Show the database, query, switch and sync figures for people."""
    status = database_status()
    context = {
        "status": status,
        **telemetry.report(status.failover),
        "tables": app_tables(),
    }
    return render(request, "db/system.html", context)
