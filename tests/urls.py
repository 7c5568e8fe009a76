"""Views that exercise the failover middleware, beside Kindler's own URLs."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.decorators import login_not_required
from django.db import connections, router
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from clusters.models import Cluster
from tests.factories import cluster_fields

# Set by a test: runs inside the view after the first write, on PostgreSQL only.
after_write: Callable[[], None] | None = None


@login_not_required
def count_clusters(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": Cluster.objects.count(), "alias": router.db_for_read(Cluster)})


@login_not_required
@csrf_exempt
def create_cluster(request: HttpRequest) -> JsonResponse:
    alias = router.db_for_write(Cluster)
    cluster = Cluster(**cluster_fields(name=request.POST["name"]))
    cluster.save()
    if alias == "postgres" and after_write is not None:
        after_write()
    if request.POST.get("then_read"):
        Cluster.objects.count()
    return JsonResponse({"alias": alias, "vendor": connections[alias].vendor}, status=201)


urlpatterns = [
    path("probe/count", count_clusters),
    path("probe/create", create_cluster),
    path("", include("kindler.urls")),
]


@login_not_required
@csrf_exempt
def rename_cluster(request: HttpRequest) -> JsonResponse:
    """Rename one cluster by uid in a single UPDATE (no read before it)."""
    alias = router.db_for_write(Cluster)
    renamed = Cluster.objects.filter(uid=request.POST["uid"]).update(name=request.POST["name"])
    return JsonResponse({"alias": alias, "renamed": renamed})


# Kindler's own urls answer every other /api/ path, so these go first.
urlpatterns = [
    path("api/probe/create", create_cluster),
    path("probe/rename", rename_cluster),
    *urlpatterns,
]
