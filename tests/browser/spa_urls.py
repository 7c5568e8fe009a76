"""Kindler's URLs plus a single-page client served from the same origin."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth.decorators import login_not_required
from django.http import FileResponse, HttpRequest
from django.urls import include, path

SPA = Path(__file__).resolve().parent / "spa"


@login_not_required
def index(request: HttpRequest) -> FileResponse:
    return FileResponse((SPA / "index.html").open("rb"), content_type="text/html")


@login_not_required
def script(request: HttpRequest) -> FileResponse:
    return FileResponse((SPA / "client.js").open("rb"), content_type="text/javascript")


urlpatterns = [
    path("spa/", index),
    path("spa/client.js", script),
    path("", include("kindler.urls")),
]
