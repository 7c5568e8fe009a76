"""Requests that change what a cluster should be; the reconciler acts on them."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction

from clusters import preflight
from clusters.models import (
    Cluster,
    ClusterProtectedError,
    DesiredState,
    Operation,
    OperationLog,
)


def request_create(**fields: Any) -> tuple[Cluster, OperationLog]:
    """Validate and save a new cluster that should exist, and queue its creation."""
    cluster = Cluster(desired_state=DesiredState.PRESENT, **fields)
    # A fresh uuid4 cannot be taken: skip the query that would check it.
    cluster.full_clean(exclude=["uid"])
    # Subnet overlaps and a missing provider binary, beside the field they concern.
    preflight.check_request(cluster)
    using = router.db_for_write(Cluster)
    try:
        # A savepoint, so a request that loses the race below can still answer.
        with transaction.atomic(using=using):
            cluster.save(using=using)
            task = OperationLog.objects.using(using).create(
                cluster_name=cluster.name, operation=Operation.CREATE
            )
    except IntegrityError:
        # Another request took the name between the check and the insert.
        raise ValidationError({"name": [cluster.unique_error_message(Cluster, ["name"])]}) from None
    return cluster, task


def request_delete(cluster: Cluster) -> OperationLog:
    """Mark a cluster to be deleted and queue its deletion."""
    if cluster.is_protected:
        raise ClusterProtectedError(f"The {cluster.name} cluster cannot be deleted.")
    using = router.db_for_write(Cluster, instance=cluster)
    with transaction.atomic(using=using, savepoint=False):
        cluster.desired_state = DesiredState.ABSENT
        cluster.save(using=using, update_fields=["desired_state", "updated_at"])
        return OperationLog.objects.using(using).create(
            cluster_name=cluster.name, operation=Operation.DELETE
        )


def request_start(cluster: Cluster) -> OperationLog:
    """Ask for a stopped cluster to run again, and queue the start."""
    return _request(cluster, DesiredState.PRESENT, Operation.START)


def request_stop(cluster: Cluster) -> OperationLog:
    """Ask for a cluster to be stopped (kept, not deleted), and queue the stop."""
    return _request(cluster, DesiredState.STOPPED, Operation.STOP)


def _request(cluster: Cluster, desired: str, operation: str) -> OperationLog:
    using = router.db_for_write(Cluster, instance=cluster)
    with transaction.atomic(using=using, savepoint=False):
        cluster.desired_state = desired
        cluster.save(using=using, update_fields=["desired_state", "updated_at"])
        return OperationLog.objects.using(using).create(
            cluster_name=cluster.name, operation=operation
        )
