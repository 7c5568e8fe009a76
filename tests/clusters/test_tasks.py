"""Operations as the original web UI's tasks: status, progress, message, logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clusters.models import OperationLog
from clusters.tasks import message, progress, task_to_dict

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

K3D_CREATE = (
    "INFO[0000] Prep: Network\n"
    "INFO[0000] Created network 'k3d-dev'\n"
    "INFO[0000] Created image volume k3d-dev-images\n"
    "INFO[0001] Creating node 'k3d-dev-server-0'\n"
    "INFO[0001] Creating LoadBalancer 'k3d-dev-serverlb'\n"
    "INFO[0002] Starting cluster 'dev'\n"
    "INFO[0009] Cluster 'dev' created successfully!\n"
)


def operation(**fields: object) -> OperationLog:
    values: dict[str, object] = {"cluster_name": "dev", "operation": "create", "status": "pending"}
    values.update(fields)
    entry = OperationLog(**values)
    entry.created_at = CREATED
    return entry


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("pending", "pending"),
        ("running", "running"),
        ("success", "completed"),
        ("failed", "failed"),
        ("timeout", "failed"),
    ],
)
def test_statuses_map_to_the_originals_four(status: str, expected: str) -> None:
    assert task_to_dict(operation(status=status), "k3d")["status"] == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, 10),
        (1, 10),
        (2, 15),
        (4, 35),
        (6, 60),
        (7, 95),
    ],
)
def test_a_running_k3d_create_advances_with_its_phases(lines: int, expected: int) -> None:
    output = "".join(K3D_CREATE.splitlines(keepends=True)[:lines])
    assert progress(operation(status="running", log_output=output), "k3d") == expected


def test_a_running_operation_without_known_phases_has_begun() -> None:
    stop = operation(operation="stop", status="running", log_output="dev-control-plane\n")
    assert progress(stop, "kind") == 10


def test_a_running_operation_of_a_deleted_cluster_has_begun() -> None:
    assert progress(operation(status="running", log_output=K3D_CREATE), None) == 10


@pytest.mark.parametrize(
    ("status", "expected"), [("pending", 0), ("success", 100), ("failed", 100)]
)
def test_pending_and_finished_operations_are_at_the_ends(status: str, expected: int) -> None:
    assert progress(operation(status=status, log_output=K3D_CREATE[:40]), "k3d") == expected


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("create", "pending", "Creating cluster dev"),
        ("stop", "running", "Stopping cluster dev"),
        ("start", "success", "Cluster dev started"),
        ("delete", "timeout", "Deleting cluster dev failed"),
    ],
)
def test_the_message_says_what_happens_to_which_cluster(
    kind: str, status: str, expected: str
) -> None:
    assert message(operation(operation=kind, status=status)) == expected


def test_a_finished_task_has_every_field_of_the_original() -> None:
    started, completed = CREATED + timedelta(seconds=1), CREATED + timedelta(seconds=9)
    entry = operation(
        status="failed",
        log_output="INFO[0000] Prep: Network\nFATA[0002] Cluster creation FAILED\n",
        error_message="k3d exited with status 1",
        started_at=started,
        completed_at=completed,
    )
    assert task_to_dict(entry, "k3d") == {
        "task_id": str(entry.uid),
        "status": "failed",
        "progress": 100,
        "message": "Creating cluster dev failed",
        "logs": ["INFO[0000] Prep: Network", "FATA[0002] Cluster creation FAILED"],
        "error": "k3d exited with status 1",
        "created_at": "2026-01-02T03:04:05+00:00",
        "updated_at": "2026-01-02T03:04:14+00:00",
        "completed_at": "2026-01-02T03:04:14+00:00",
    }


def test_a_failed_task_without_a_message_still_says_it_failed() -> None:
    entry = operation(operation="stop", status="timeout")
    assert task_to_dict(entry, "k3d")["error"] == "stop ended with status timeout"


def test_a_running_task_was_last_updated_when_it_started() -> None:
    started = CREATED + timedelta(seconds=2)
    body = task_to_dict(operation(status="running", started_at=started), "k3d")
    assert (body["updated_at"], body["completed_at"]) == ("2026-01-02T03:04:07+00:00", None)
