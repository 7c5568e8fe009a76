"""Admin for clusters and their operation log; works on whichever database is active."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import ActionLocation  # type: ignore[attr-defined]
from django.db.models import QuerySet
from django.http import HttpRequest

from clusters import lifecycle
from clusters.models import Cluster, DesiredState, OperationLog


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "provider",
        "http_port",
        "https_port",
        "pf_port",
        "node_port",
        "subnet",
        "desired_state",
        "actual_state",
        "updated_at",
    ]
    list_filter = ["provider", "desired_state", "actual_state"]
    search_fields = ["name"]
    readonly_fields = [
        "uid",
        "version",
        "actual_state",
        "last_reconciled_at",
        "reconcile_error",
        "created_at",
        "updated_at",
    ]
    actions = ["mark_for_deletion"]
    list_per_page = 50

    @admin.action(description="Mark selected clusters for deletion")
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Operations are recorded by Kindler itself, never typed in.
        return False
