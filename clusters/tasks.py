"""Operations as the original Kindler web UI's tasks (its TaskStatus shape)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clusters.models import Operation, OperationLog, OperationStatus

TASK_STATUS: dict[str, str] = {
    OperationStatus.PENDING: "pending",
    OperationStatus.RUNNING: "running",
    OperationStatus.SUCCESS: "completed",
    OperationStatus.FAILED: "failed",
    OperationStatus.TIMEOUT: "failed",
}
FINISHED = frozenset({"completed", "failed"})
# What a running operation has reached, read from the provider's output: the
# first words of each phase k3d and kind print, with the share of the whole
# operation done once that phase begins. Later phases win.
PHASES: dict[tuple[str, str], tuple[tuple[str, int], ...]] = {
    ("k3d", Operation.CREATE): (
        ("Prep: Network", 10),
        ("Created network", 15),
        ("Created image volume", 20),
        ("Creating node", 35),
        ("Creating LoadBalancer", 45),
        ("Starting cluster", 60),
        ("Starting servers", 70),
        ("Starting helpers", 80),
        ("Injecting records", 85),
        ("created successfully", 95),
    ),
    ("k3d", Operation.DELETE): (
        ("Deleting cluster '", 20),
        ("Deleting cluster network", 50),
        ("attached volumes", 70),
        ("Removing cluster details", 85),
        ("Successfully deleted", 95),
    ),
    ("k3d", Operation.START): (("Starting cluster", 30), ("Started cluster", 95)),
    ("k3d", Operation.STOP): (("Stopping cluster", 30), ("Stopped cluster", 95)),
    ("kind", Operation.CREATE): (
        ("Creating cluster", 5),
        ("Ensuring node image", 15),
        ("Preparing nodes", 35),
        ("Writing configuration", 45),
        ("Starting control-plane", 60),
        ("Installing CNI", 75),
        ("Installing StorageClass", 80),
        ("Waiting", 85),
        ("Set kubectl context", 95),
    ),
    ("kind", Operation.DELETE): (("Deleting cluster", 50), ("Deleted nodes", 95)),
}
# A running operation whose output names no known phase yet (or whose
# provider prints none, as `docker stop` for kind) has at least begun.
STARTED_PROGRESS = 10
VERBS: dict[str, tuple[str, str]] = {
    Operation.CREATE: ("Creating", "created"),
    Operation.DELETE: ("Deleting", "deleted"),
    Operation.START: ("Starting", "started"),
    Operation.STOP: ("Stopping", "stopped"),
    Operation.IMPORT: ("Importing", "imported"),
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def progress(operation: OperationLog, provider: str | None) -> int:
    """Estimate how far an operation has come, 0-100, from its status and output."""
    status = TASK_STATUS[operation.status]
    if status in FINISHED:
        return 100
    if status == "pending":
        return 0
    reached = STARTED_PROGRESS
    for marker, percent in PHASES.get((provider or "", operation.operation), ()):
        if marker in operation.log_output:
            reached = max(reached, percent)
    return reached


def message(operation: OperationLog) -> str:
    """Say in a few words what the operation does, or how it ended."""
    doing, done = VERBS.get(operation.operation, ("Running", "done"))
    name = operation.cluster_name
    status = TASK_STATUS[operation.status]
    if status == "completed":
        return f"Cluster {name} {done}"
    if status == "failed":
        return f"{doing} cluster {name} failed"
    return f"{doing} cluster {name}"


def task_to_dict(operation: OperationLog, provider: str | None) -> dict[str, Any]:
    """Return an operation as the original API's TaskStatus.

    Operations keep no update time of their own: the latest of their
    creation, start and end stands in for it.
    """
    status = TASK_STATUS[operation.status]
    error = operation.error_message or None
    if status == "failed" and error is None:
        error = f"{operation.operation} ended with status {operation.status}"
    return {
        "task_id": str(operation.uid),
        "status": status,
        "progress": progress(operation, provider),
        "message": message(operation),
        "logs": operation.log_output.splitlines(),
        "error": error,
        "created_at": _iso(operation.created_at),
        "updated_at": _iso(operation.completed_at or operation.started_at or operation.created_at),
        "completed_at": _iso(operation.completed_at),
    }
