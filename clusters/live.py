"""What the dashboard's pages poll to stay current: the parts that change when an operation ends.

Each answer carries a token naming what it shows (rows' uids and versions);
a poll that sends the token it has (X-Live-Token) gets 204 while nothing changed, so an
idle page costs two small queries every few seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_safe

from clusters import placement
from clusters.counts import counted
from clusters.forms import ClusterFilterForm
from clusters.hooks import INTEGRATIONS
from clusters.models import ActualState, Cluster, OperationLog, OperationStatus
from kindler.charts import Segment, timeline

CLUSTERS_PER_PAGE = 50
OPERATIONS_SHOWN = 20
OPEN_STATUSES = (OperationStatus.PENDING, OperationStatus.RUNNING)
INTEGRATION_LABELS = {"portainer": "Portainer", "haproxy": "HAProxy route", "argocd": "Argo CD"}


def list_context(request: HttpRequest) -> dict[str, Any]:
    """Return the cluster list's page of rows, filters and summary by state."""
    filters = ClusterFilterForm(request.GET)
    latest = OperationLog.objects.filter(cluster_name=OuterRef("name")).order_by(
        "-created_at", "-id"
    )
    clusters = filters.filter(Cluster.objects.all()).annotate(
        last_operation=Subquery(latest.values("operation")[:1]),
        last_operation_status=Subquery(latest.values("status")[:1]),
        last_operation_version=Subquery(latest.values("version")[:1]),
        state_changed_at=Coalesce("last_reconciled_at", "created_at"),
    )
    counts = counted("clusters by state", clusters.db, clusters_by_state)
    filtered = any(filters.data.get(key) for key in ("q", "provider", "state"))
    paginator = Paginator(clusters, CLUSTERS_PER_PAGE)
    if not filtered:
        # The summary counted every cluster already: counting them again for
        # the pager would be a second pass over 100,000 of them.
        paginator = CountedPaginator(clusters, CLUSTERS_PER_PAGE)
        paginator.count = sum(counts.values())
    page = paginator.get_page(request.GET.get("page"))
    summary = [(label, counts[value]) for value, label in ActualState.choices if counts.get(value)]
    rows = [
        {
            "cluster": cluster,
            "token": token([cluster.uid, cluster.version, *last_operation(cluster)]),
        }
        for cluster in page.object_list
    ]
    return {
        "rows": rows,
        "page": page,
        "filters": filters,
        "summary": summary,
        "total": sum(counts.values()),
        "filtered": filtered,
        "list_token": token([*(row["token"] for row in rows), sorted(counts.items())]),
    }


class CountedPaginator(Paginator):
    """A paginator told its count, which may be a kept one: each page still shows all its rows."""

    def page(self, number: int | str) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        # Up to a page whatever the count says: a cluster added since the
        # count was read still shows on the last page.
        return Page(self.object_list[bottom : bottom + self.per_page], number, self)


def clusters_by_state() -> dict[str, int]:
    """Return how many clusters are in each actual state, from the state index."""
    return dict(Cluster.objects.order_by().values_list("actual_state").annotate(n=Count("id")))


def last_operation(cluster: Cluster) -> tuple[Any, Any]:
    return getattr(cluster, "last_operation", None), getattr(
        cluster, "last_operation_version", None
    )


@require_safe
def list_live(request: HttpRequest) -> HttpResponse:
    """Return the cluster list's rows and summary as JSON, or 204 when the token is current."""
    context = list_context(request)
    if request.headers.get("X-Live-Token") == context["list_token"]:
        return HttpResponse(status=204)
    rows = [
        {
            "name": row["cluster"].name,
            "token": row["token"],
            "html": render_to_string("clusters/includes/cluster_row.html", row, request=request),
        }
        for row in context["rows"]
    ]
    # The table is drawn from the rows just rendered (templates escaped them).
    context["rendered_rows"] = mark_safe("".join(row["html"] for row in rows))
    html = render_to_string("clusters/includes/cluster_rows.html", context, request=request)
    return JsonResponse({"token": context["list_token"], "rows": rows, "html": html})


def token(parts: Iterable[object]) -> str:
    """Return a short digest naming the state of what a page shows."""
    text = "|".join(str(part) for part in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def detail_token(cluster: Cluster | None, operations: list[OperationLog]) -> str:
    head = f"{cluster.uid}:{cluster.version}" if cluster else "gone"
    return token([head, *(f"{op.uid}:{op.version}" for op in operations)])


def integrations(cluster: Cluster | None, name: str) -> list[dict[str, Any]]:
    """Return, per flag, whether it is requested and what the last hook said about it."""
    claims: dict[str, dict[str, Any]] = {}
    runs = OperationLog.objects.filter(cluster_name=name, hooks__isnull=False)
    for operation in runs.order_by("-created_at", "-id")[:50]:
        for result in operation.hook_results or []:
            for integration, claim in (result.get("claims") or {}).items():
                if integration in INTEGRATIONS and integration not in claims:
                    claims[integration] = {**claim, "hook": result.get("hook"), "op": operation}
    rows = []
    for integration, flag in INTEGRATIONS.items():
        rows.append(
            {
                "label": INTEGRATION_LABELS[integration],
                "requested": bool(cluster and getattr(cluster, flag)),
                "claim": claims.get(integration),
            }
        )
    return rows


def last_hooks(name: str) -> OperationLog | None:
    """Return the latest operation that ran hooks, if any."""
    runs = OperationLog.objects.filter(cluster_name=name, hooks__isnull=False)
    return runs.order_by("-created_at", "-id").first()


def local(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S}"


def operations_timeline(operations: list[OperationLog], name: str) -> Any:
    """Return the SVG time line of the operations that started, or None."""
    now = timezone.now()
    rows = [
        (
            op.operation,
            Segment(
                op.started_at,
                op.completed_at or now,
                op.status,
                f"{op.operation} {op.status}, started {local(op.started_at)}",
            ),
        )
        for op in reversed(operations)
        if op.started_at is not None
    ]
    if not rows:
        return None
    start = min(bar.start for _, bar in rows)
    end = max(max(bar.end for _, bar in rows), start + timedelta(seconds=10))
    return timeline(rows, start, end, f"Operations on {name}, oldest first")


def live_context(
    name: str, cluster: Cluster | None, operations: list[OperationLog]
) -> dict[str, Any]:
    """Return what the cluster page's live part shows, given its newest operations."""
    return {
        "name": name,
        "cluster": cluster,
        "integrations": integrations(cluster, name),
        "last_hooks": last_hooks(name),
        "hooks_dir": str(settings.KINDLER_HOOKS_DIR),
        "timeline": operations_timeline(operations, name),
        "live_token": detail_token(cluster, operations),
        "busy": any(op.status in OPEN_STATUSES for op in operations),
        "waiting": placement.waiting_message(cluster.host) if cluster else None,
    }


def newest_operations(name: str) -> list[OperationLog]:
    return list(OperationLog.objects.filter(cluster_name=name)[:OPERATIONS_SHOWN])


@require_safe
def cluster_live(request: HttpRequest, name: str) -> HttpResponse:
    """Return the cluster page's live part as JSON, or 204 when the token is current."""
    cluster = Cluster.objects.filter(name=name).first()
    operations = newest_operations(name)
    if cluster is None and not operations:
        return JsonResponse({"detail": f"No cluster named {name}."}, status=404)
    current = detail_token(cluster, operations)
    if request.headers.get("X-Live-Token") == current:
        return HttpResponse(status=204)
    context = live_context(name, cluster, operations)
    html = render_to_string("clusters/includes/cluster_live.html", context, request=request)
    return JsonResponse(
        {
            "token": current,
            "html": html,
            "operations": [str(op.uid) for op in operations],
            "busy": context["busy"],
        }
    )
