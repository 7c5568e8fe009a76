"""Project-wide views: the public health check and the System page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from kindler import __version__
from kindler.db.status import database_report, is_degraded


@login_not_required
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Report whether Kindler is on PostgreSQL; public, and free of secrets."""
    database = database_report()
    return JsonResponse(
        {
            "status": "degraded" if is_degraded(database) else "healthy",
            "service": "kindler",
            "version": __version__,
            "database": database,
        }
    )


@require_safe
def system(request: HttpRequest) -> HttpResponse:
    """Show the database, query, switch and sync figures for people."""
    from kindler.metrics import system_figures

    return render(request, "db/system.html", system_figures())
