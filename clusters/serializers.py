"""Clusters and operations as the JSON the original Kindler web UI speaks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clusters.models import ActualState, Cluster, OperationLog
from clusters.queries import ClusterRow

# The original web UI's words for a cluster's state: running, stopped,
# creating, deleting, error and unknown. actual_state keeps Kindler's own.
STATUS_WORDS: dict[str, str] = {
    ActualState.RUNNING: "running",
    ActualState.STOPPED: "stopped",
    ActualState.CREATING: "creating",
    ActualState.DELETING: "deleting",
    ActualState.FAILED: "error",
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def status_word(state: str) -> str:
    """Return the original web UI's word for a state (unknown for absent and unknown)."""
    return STATUS_WORDS.get(state, "unknown")


def cluster_to_dict(cluster: Cluster | ClusterRow) -> dict[str, Any]:
    """Return a cluster in the original API's shape (subnet as cluster_subnet)."""
    return {
        "name": cluster.name,
        "provider": cluster.provider,
        "host": cluster.host,
        "node_port": cluster.node_port,
        "pf_port": cluster.pf_port,
        "http_port": cluster.http_port,
        "https_port": cluster.https_port,
        "cluster_subnet": cluster.subnet or None,
        "register_portainer": cluster.register_portainer,
        "haproxy_route": cluster.haproxy_route,
        "register_argocd": cluster.register_argocd,
        "server_ip": cluster.server_ip,
        "status": status_word(cluster.actual_state),
        "desired_state": cluster.desired_state,
        "actual_state": cluster.actual_state,
        "last_reconciled_at": _iso(cluster.last_reconciled_at),
        "reconcile_error": cluster.reconcile_error or None,
        "created_at": _iso(cluster.created_at),
        "updated_at": _iso(cluster.updated_at),
    }


def operation_to_dict(operation: OperationLog) -> dict[str, Any]:
    """Return one operation log entry as JSON data."""
    return {
        "id": str(operation.uid),
        "cluster_name": operation.cluster_name,
        "operation": operation.operation,
        "status": operation.status,
        "command": operation.command,
        "log_output": operation.log_output,
        "error_message": operation.error_message or None,
        "exit_code": operation.exit_code,
        "started_at": _iso(operation.started_at),
        "completed_at": _iso(operation.completed_at),
        "duration_seconds": operation.duration_seconds,
        "created_at": _iso(operation.created_at),
        "hooks": operation.hook_results,
        "warning": operation.hook_warning or None,
    }
