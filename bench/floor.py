"""A bare Django view, for the floor: what any Django answer costs under granian.

bench/api.py serves it with kindler.webserver's workers and threads, and
compares Kindler's answers (update above all, which the original lacks)
with it.
"""

from __future__ import annotations

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-floor",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        DATABASES={},
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
    )

from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path


def floor(request: HttpRequest) -> JsonResponse:
    """Answer a small JSON object, as an API read would."""
    return JsonResponse({"name": "floor", "status": "running"})


urlpatterns = [path("floor", floor)]
application = get_wsgi_application()
