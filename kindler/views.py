"""Project-wide views: the public health check."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
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
