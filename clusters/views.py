"""The server-rendered dashboard."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from clusters.models import Cluster


@login_required
def cluster_list(request: HttpRequest) -> HttpResponse:
    """List every cluster in the inventory."""
    return render(request, "clusters/cluster_list.html", {"clusters": Cluster.objects.all()})
