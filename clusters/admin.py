from __future__ import annotations

from django.contrib import admin

from clusters.models import Cluster, OperationLog


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = ["name", "provider", "http_port", "https_port", "desired_state", "actual_state"]
    list_filter = ["provider", "desired_state", "actual_state"]
    search_fields = ["name"]
    readonly_fields = ["uid", "version", "created_at", "updated_at"]


@admin.register(OperationLog)
class OperationLogAdmin(admin.ModelAdmin):
    list_display = ["cluster_name", "operation", "status", "started_at", "completed_at"]
    list_filter = ["operation", "status"]
    search_fields = ["cluster_name"]
    date_hierarchy = "created_at"
    readonly_fields = ["uid", "version", "log_output", "created_at"]
