"""Admin for clusters and their operation log; works on whichever database is active."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.contrib.admin.options import ActionLocation  # type: ignore[attr-defined]
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import router
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from clusters import lifecycle, permissions
from clusters.forms import PORT_ERRORS, PORT_FIELDS
from clusters.models import Cluster, DesiredState, OperationLog, Registration


class ClusterAdminForm(forms.ModelForm):
    """The admin's cluster form: a new cluster is refused past its limits."""

    # The person adding, set by ClusterAdmin.get_form.
    account = ""

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        if self.instance._state.adding:
            try:
                lifecycle.check_room(router.db_for_write(Cluster), self.account)
            except lifecycle.TooManyClusters as exc:
                raise ValidationError(str(exc)) from None
        return cleaned


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    form = ClusterAdminForm
    # Few, short columns: with the admin's sidebar and filters the list
    # must fit a 1,400-pixel screen without scrolling sideways.
    list_display = [
        "name",
        "provider",
        "host",
        "ports",
        "subnet",
        "desired",
        "actual",
        "state_changed",
    ]
    list_filter = ["provider", "host", "desired_state", "actual_state"]
    search_fields = ["name"]
    # desired_state changes only through the actions below, which need the
    # same permissions as the dashboard and the API (and queue the operation).
    readonly_fields = [
        "uid",
        "version",
        "desired_state",
        "actual_state",
        "last_reconciled_at",
        "reconcile_error",
        "created_by",
        "created_at",
        "updated_at",
    ]
    # What identifies the real cluster: a change would orphan it.
    fixed_fields = ["name", "provider", "host"]
    actions = ["mark_for_deletion", "start_clusters", "stop_clusters"]
    list_per_page = 50

    @admin.display(description="Desired", ordering="desired_state")
    def desired(self, cluster: Cluster) -> str:
        return str(cluster.get_desired_state_display())

    @admin.display(description="Actual", ordering="actual_state")
    def actual(self, cluster: Cluster) -> str:
        return str(cluster.actual_state)

    @admin.display(description="Ports")
    def ports(self, cluster: Cluster) -> str:
        """Return the HTTP, HTTPS, port-forward and NodePort ports, named in a tooltip."""
        return format_html(
            '<span title="HTTP, HTTPS, port-forward, NodePort">{}, {}, {}, {}</span>',
            cluster.http_port,
            cluster.https_port,
            cluster.pf_port,
            cluster.node_port,
        )

    @admin.display(description="Updated", ordering="last_reconciled_at")
    def state_changed(self, cluster: Cluster) -> str:
        """Return when the actual state last changed (the last reconcile), or the creation."""
        moment = timezone.localtime(cluster.last_reconciled_at or cluster.created_at)
        return f"{moment:%Y-%m-%d %H:%M}"

    @admin.action(description="Mark selected clusters for deletion", permissions=["delete"])
    def mark_for_deletion(self, request: HttpRequest, queryset: QuerySet[Cluster]) -> None:
        """Set desired_state=absent (the reconciler deletes them); skip protected ones."""
        marked: list[str] = []
        for cluster in queryset.exclude(desired_state=DesiredState.ABSENT):
            if cluster.is_protected:
                self.message_user(
                    request, f"The {cluster.name} cluster cannot be deleted.", messages.ERROR
                )
                continue
            lifecycle.request_delete(cluster)
            marked.append(cluster.name)
        if marked:
            self.message_user(request, f"Marked for deletion: {', '.join(marked)}.")

    @admin.action(description="Start selected clusters", permissions=["operate"])
    def start_clusters(self, request: HttpRequest, queryset: QuerySet[Cluster]) -> None:
        """Set desired_state=present on stopped clusters (the reconciler starts them)."""
        chosen = list(queryset.filter(desired_state=DesiredState.STOPPED))
        for cluster in chosen:
            lifecycle.request_start(cluster)
        if chosen:
            self.message_user(request, f"Starting: {', '.join(c.name for c in chosen)}.")

    @admin.action(description="Stop selected clusters", permissions=["operate"])
    def stop_clusters(self, request: HttpRequest, queryset: QuerySet[Cluster]) -> None:
        """Set desired_state=stopped on running clusters (the reconciler stops them)."""
        chosen = list(queryset.filter(desired_state=DesiredState.PRESENT))
        for cluster in chosen:
            lifecycle.request_stop(cluster)
        if chosen:
            self.message_user(request, f"Stopping: {', '.join(c.name for c in chosen)}.")

    def get_form(
        self, request: HttpRequest, obj: Cluster | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.account = permissions.account(request)  # type: ignore[attr-defined]
        return form

    def save_model(self, request: HttpRequest, obj: Cluster, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = permissions.account(request)
        super().save_model(request, obj, form, change)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("clusters.operate_cluster"))

    def get_readonly_fields(self, request: HttpRequest, obj: Cluster | None = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        return fields if obj is None else [*self.fixed_fields, *fields]

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name in PORT_FIELDS:
            kwargs["error_messages"] = PORT_ERRORS
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        response = super().changeform_view(request, object_id, form_url, extra_context)
        context = getattr(response, "context_data", None) or {}
        if request.method == "POST" and response.status_code == 200 and context.get("errors"):
            # The refused submission is shown again: say so in the status too.
            response.status_code = 422
        return response

    def get_actions(
        self, request: HttpRequest, action_location: Any = ActionLocation.CHANGE_LIST
    ) -> dict[str, Any]:
        actions = super().get_actions(request, action_location)
        # Deleting rows directly would orphan the real clusters; mark them instead.
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Cluster | None = None) -> bool:
        if obj is not None and obj.is_protected:
            return False
        return super().has_delete_permission(request, obj)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Confirm, then mark the cluster for deletion; the reconciler removes it."""
        cluster = self.get_object(request, unquote(object_id))
        if cluster is None:
            return super().delete_view(request, object_id, extra_context)
        if not self.has_delete_permission(request):
            raise PermissionDenied
        if cluster.is_protected:
            self.message_user(
                request, f"The {cluster.name} cluster cannot be deleted.", messages.ERROR
            )
            return self._change_page(cluster)
        if cluster.desired_state == DesiredState.ABSENT:
            self.message_user(
                request,
                f"{cluster.name} is already marked for deletion; the reconciler deletes it.",
                messages.WARNING,
            )
            return self._change_page(cluster)
        if request.method != "POST":
            self.message_user(
                request,
                f"Confirming marks {cluster.name} for deletion: the reconciler deletes the "
                f"{cluster.provider} cluster, then this row. Its operation history is kept.",
                messages.WARNING,
            )
        context = {"title": f"Mark {cluster.name} for deletion", **(extra_context or {})}
        return super().delete_view(request, object_id, context)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> list[LogEntry]:
        # The row stays until the reconciler has deleted the real cluster.
        return [self.log_change(request, cluster, "Marked for deletion.") for cluster in queryset]

    def delete_model(self, request: HttpRequest, obj: Cluster) -> None:
        """Mark the cluster for deletion instead of deleting its row."""
        lifecycle.request_delete(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Cluster]) -> None:
        """Mark the clusters for deletion instead of deleting their rows."""
        self.mark_for_deletion(request, queryset)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        self.message_user(request, f"Marked {obj_display} for deletion; the reconciler deletes it.")
        url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )
        filters = self.get_preserved_filters(request)
        return HttpResponseRedirect(
            add_preserved_filters({"preserved_filters": filters, "opts": self.opts}, url)
        )

    def _change_page(self, cluster: Cluster) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=[quote(cluster.pk)],
                current_app=self.admin_site.name,
            )
        )


@admin.register(OperationLog)
class OperationLogAdmin(admin.ModelAdmin):
    list_display = [
        "cluster_name",
        "operation",
        "status",
        "exit_code",
        "created_at",
        "started_at",
        "completed_at",
    ]
    list_filter = ["operation", "status"]
    search_fields = ["cluster_name", "command"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "uid",
        "version",
        "cluster_name",
        "operation",
        "command",
        "log_output",
        "error_message",
        "exit_code",
        "started_at",
        "completed_at",
        "created_at",
    ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        reason = date_hierarchy_error(request.GET, "created_at")
        if reason is not None:
            return render(request, "400.html", {"reason": reason}, status=400)
        return super().changelist_view(request, extra_context)

    # Operations are recorded by Kindler itself: never typed in, edited or erased.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OperationLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OperationLog | None = None) -> bool:
        return False


# Django's date hierarchy turns these into datetimes without a range check:
# year 9999 has no next year, and a 20-digit year overflows.
DATE_PARTS = (("year", 1, 9998), ("month", 1, 12), ("day", 1, 31))


def date_hierarchy_error(query: QueryDict, field: str) -> str | None:
    """Return why the date hierarchy's year, month and day in query are not a date, if so."""
    values: list[int] = []
    for part, low, high in DATE_PARTS:
        raw = query.get(f"{field}__{part}")
        if raw is None:
            break
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and low <= int(raw) <= high):
            return f"The {part} must be a whole number from {low} to {high}."
        values.append(int(raw))
    if len(values) == 3:
        try:
            datetime(values[0], values[1], values[2])
        except ValueError:
            return "The day is not in that month."
    return None


@admin.register(Registration)
class RegistrationAdmin(admin.ModelAdmin):
    """The reconcilers that registered, read-only: each process writes its own row."""

    list_display = ["host", "pid", "version", "providers", "started_at", "last_seen"]
    list_filter = ["host"]
    exclude = ["observed"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
