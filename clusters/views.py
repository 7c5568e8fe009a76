"""The server-rendered dashboard: list, detail, create, edit, delete, start and stop."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from clusters import lifecycle, live, permissions, placement, queries, registry
from clusters.forms import ClusterEditForm, ClusterForm, DeleteConfirmForm
from clusters.models import Cluster, DesiredState, OperationLog, free_host_ports

OPERATIONS_PER_PAGE = 20
_FORM_METHODS = require_http_methods(["GET", "HEAD", "POST"])


def form_status(request: HttpRequest) -> int:
    """Return the status of a form page: 422 when it shows a refused submission."""
    return 422 if request.method == "POST" else 200


@require_safe
def cluster_list(request: HttpRequest) -> HttpResponse:
    """List clusters, searchable and filterable, 50 a page, with a summary by state."""
    live_hosts = registry.live_registrations()
    hosts = set(queries.cluster_hosts())
    context = {
        **live.list_context(request),
        "waiting_hosts": sorted(hosts - {entry.host for entry in live_hosts} - {""}),
        "no_providers": not any(entry.providers for entry in live_hosts),
        # Reconcilers that run (scripts/run starts one) but found no provider:
        # installing one there is the way out, not starting another.
        "hosts_without_providers": sorted({entry.host for entry in live_hosts}),
        "install_pages": registry.INSTALL_PAGES,
    }
    return render(request, "clusters/cluster_list.html", context)


@require_safe
def cluster_detail(request: HttpRequest, name: str) -> HttpResponse:
    """Show every field of a cluster and its operations, newest first."""
    cluster = get_object_or_404(Cluster, name=name)
    operations = OperationLog.objects.filter(cluster_name=name)
    page = Paginator(operations, OPERATIONS_PER_PAGE).get_page(request.GET.get("page"))
    newest = list(page.object_list) if page.number == 1 else live.newest_operations(name)
    context = {
        **live.live_context(name, cluster, newest),
        "page": page,
    }
    return render(request, "clusters/cluster_detail.html", context)


@require_safe
def operation_fragment(request: HttpRequest, name: str, uid: UUID) -> HttpResponse:
    """Render one operation alone, for the page that polls a running one."""
    operation = get_object_or_404(OperationLog, cluster_name=name, uid=uid)
    return render(
        request, "clusters/includes/operation.html", {"operation": operation, "open": True}
    )


@_FORM_METHODS
def cluster_create(request: HttpRequest) -> HttpResponse:
    """Add a cluster that should exist; the reconciler creates it."""
    permissions.require(request, "create")
    if request.method == "POST":
        form = ClusterForm(request.POST)
    else:
        # Offer ports no cluster uses yet, so the first submit can succeed.
        host = placement.suggested_host()
        form = ClusterForm(initial={**free_host_ports(host), "host": host})
    if request.method == "POST" and form.is_valid():
        try:
            cluster, _ = lifecycle.request_create(
                **form.cleaned_data, created_by=permissions.account(request)
            )
        except lifecycle.TooManyClusters as exc:
            form.add_error(None, str(exc))
        except ValidationError as exc:
            # The preflight (subnet overlap, provider CLI) runs only here, and a
            # name or port may have been taken since the form was checked.
            form.add_error(None, exc)
        else:
            waiting = placement.waiting_message(cluster.host)
            if waiting:
                messages.warning(request, f"Cluster {cluster.name} added. {waiting}")
            else:
                messages.success(
                    request, f"Cluster {cluster.name} added; it will be created shortly."
                )
            return redirect("clusters:detail", name=cluster.name)
    return render(
        request,
        "clusters/cluster_form.html",
        {"form": form, "cluster": None},
        status=form_status(request),
    )


@_FORM_METHODS
def cluster_edit(request: HttpRequest, name: str) -> HttpResponse:
    """Change a cluster's ports, subnet and integrations."""
    permissions.require(request, "edit")
    cluster = get_object_or_404(Cluster, name=name)
    form = ClusterEditForm(request.POST or None, instance=cluster)
    if request.method == "POST" and form.is_valid():
        try:
            lifecycle.request_update(form.instance)
        except ValidationError as exc:
            # Another cluster took one of the ports since the form was checked.
            form.add_error(None, exc)
        else:
            messages.success(request, f"Cluster {cluster.name} saved.")
            return redirect("clusters:detail", name=cluster.name)
    return render(
        request,
        "clusters/cluster_form.html",
        {"form": form, "cluster": cluster},
        status=form_status(request),
    )


@_FORM_METHODS
def cluster_delete(request: HttpRequest, name: str) -> HttpResponse:
    """Mark a cluster for deletion once its name has been typed to confirm."""
    permissions.require(request, "delete")
    cluster = get_object_or_404(Cluster, name=name)
    template = "clusters/cluster_confirm_delete.html"
    if cluster.is_protected:
        status = 403 if request.method == "POST" else 200
        return render(request, template, {"cluster": cluster, "form": None}, status=status)
    form = DeleteConfirmForm(cluster, request.POST or None)
    if request.method == "POST" and form.is_valid():
        lifecycle.request_delete(cluster)
        messages.success(request, f"Cluster {cluster.name} marked for deletion.")
        return redirect("clusters:detail", name=cluster.name)
    return render(request, template, {"cluster": cluster, "form": form})


@require_POST
def cluster_start(request: HttpRequest, name: str) -> HttpResponse:
    """Ask for a stopped cluster to run again."""
    permissions.require(request, "start")
    return _change_state(request, name, lifecycle.request_start, "will be started")


@require_POST
def cluster_stop(request: HttpRequest, name: str) -> HttpResponse:
    """Ask for a cluster to be stopped, keeping it."""
    permissions.require(request, "stop")
    return _change_state(request, name, lifecycle.request_stop, "will be stopped")


def _change_state(
    request: HttpRequest, name: str, change: Callable[[Cluster], OperationLog], outcome: str
) -> HttpResponse:
    cluster = get_object_or_404(Cluster, name=name)
    if cluster.desired_state == DesiredState.ABSENT:
        # Starting it would silently cancel the deletion someone asked for.
        messages.error(request, f"Cluster {name} is marked for deletion.")
    else:
        change(cluster)
        messages.success(request, f"Cluster {name} {outcome}.")
    return redirect("clusters:detail", name=name)
