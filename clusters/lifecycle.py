"""Requests that change what a cluster should be; the reconciler acts on them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction

from clusters import placement, preflight
from clusters.models import (
    Cluster,
    ClusterProtectedError,
    DesiredState,
    Operation,
    OperationLog,
)


class TooManyClusters(Exception):
    """Kindler holds KINDLER_MAX_CLUSTERS clusters already: a create is refused."""


def check_room(using: str, created_by: str = "") -> None:
    """Raise TooManyClusters past KINDLER_MAX_CLUSTERS or created_by's own quota.

    Clusters marked for deletion count for neither. Without a limit nothing is
    counted, nor a query built: a create costs what it did.
    """
    most = int(settings.KINDLER_MAX_CLUSTERS)
    quota = int(settings.KINDLER_MAX_CLUSTERS_PER_USER)
    if not (most or (quota and created_by)):
        return
    held = Cluster.objects.using(using).exclude(desired_state=DesiredState.ABSENT)
    if most and held.count() >= most:
        raise TooManyClusters(
            f"Kindler holds its most clusters ({most}, KINDLER_MAX_CLUSTERS): "
            "delete one before creating another."
        )
    if quota and created_by and held.filter(created_by=created_by).count() >= quota:
        raise TooManyClusters(
            f"{created_by} holds their most clusters ({quota}, KINDLER_MAX_CLUSTERS_PER_USER): "
            "delete one of theirs before creating another."
        )


def request_create(**fields: Any) -> tuple[Cluster, OperationLog]:
    """Validate and save a new cluster that should exist, and queue its creation.

    A request that names no Docker host gets one (clusters.placement). Raise
    TooManyClusters when Kindler, or the account in created_by, holds its most.
    """
    check_room(router.db_for_write(Cluster), fields.get("created_by", ""))
    fields["host"] = placement.choose_host(fields.get("host"))
    cluster = Cluster(desired_state=DesiredState.PRESENT, **fields)
    # No lookups on the way to the save: a taken name or host port is
    # refused by the name's unique index and the port claims, and reported as
    # validation (see _refusals_as_validation). Only a request refused anyway
    # looks them up, so that one answer names every problem.
    try:
        cluster.full_clean(exclude=["uid"], validate_unique=False)
    except ValidationError as exc:
        errors = exc.update_error_dict({})
        _clashes(cluster, exclude={"uid", *errors}).update_error_dict(errors)
        raise ValidationError(errors) from None
    try:
        # Subnet overlaps and a missing provider binary, beside the field they concern.
        preflight.check_request(cluster)
    except ValidationError as exc:
        # A clash with another cluster is the answer first, as it was before preflight.
        clashes = _clashes(cluster, exclude={"uid"})
        raise (clashes if clashes.error_dict else exc) from None
    using = router.db_for_write(Cluster)
    # SAVEPOINT: to come back to if the database refuses the row.
    with _refusals_as_validation(cluster, using):
        # INSERT the cluster (its triggers claim the host ports, or refuse).
        cluster.save(using=using)
        # INSERT the operation: the task the caller is given, which the
        # reconciler carries out and reports into.
        task = OperationLog.objects.using(using).create(
            cluster_name=cluster.name, operation=Operation.CREATE
        )
    return cluster, task


def request_update(cluster: Cluster) -> None:
    """Save a validated cluster's changed settings, refusing a host port taken meanwhile."""
    # The same subnet check a create runs: a change must not overlap either.
    preflight.check_subnet(cluster)
    using = router.db_for_write(Cluster, instance=cluster)
    # SAVEPOINT, then one UPDATE (its triggers move the port claims, or refuse).
    with _refusals_as_validation(cluster, using):
        cluster.save(using=using)


def _clashes(cluster: Cluster, exclude: set[str]) -> ValidationError:
    """Return the cluster's clashes with others (name, host ports); empty if none."""
    try:
        cluster.validate_unique(exclude=exclude)
    except ValidationError as exc:
        return exc
    return ValidationError({})


@contextmanager
def _refusals_as_validation(cluster: Cluster, using: str) -> Iterator[None]:
    """Save in a savepoint; raise the database refusing it as model validation would.

    Nothing is looked up before the save: the unique name and the port
    claims (see PortClaim) refuse a clash, a taken name or port and another
    writer's race alike. The savepoint keeps the caller's transaction usable,
    so it can still look up who holds what, and answer.
    """
    if not transaction.get_connection(using).in_atomic_block:
        # No caller's transaction: this one is the unit, and a refusal rolls
        # it back before the lookup.
        try:
            with transaction.atomic(using=using):
                yield
        except IntegrityError as exc:
            raise _clash_or(exc, cluster, using) from None
        return
    # Released with the caller's transaction rather than by a statement of
    # its own: one round trip less to PostgreSQL for every create and update.
    savepoint = transaction.savepoint_create(using=using)
    try:
        yield
    except IntegrityError as exc:
        # The failed save marked the transaction for rollback; back at the
        # savepoint it is usable again (the flag first: it blocks every
        # statement, the rollback to the savepoint included).
        transaction.set_rollback(False, using=using)
        transaction.savepoint_rollback(savepoint, using=using)
        raise _clash_or(exc, cluster, using) from None


def _clash_or(exc: IntegrityError, cluster: Cluster, using: str) -> Exception:
    error = _clash(cluster, using)
    return exc if error is None else error


def _clash(cluster: Cluster, using: str) -> ValidationError | None:
    """Return why another cluster keeps cluster from being saved, naming it; None if none does.

    The row that got there first is committed by the time the database
    refuses the second writer, so a lookup finds it.
    """
    others = Cluster.objects.using(using).exclude(pk=cluster.pk)
    if others.filter(name=cluster.name).exists():
        return ValidationError({"name": [cluster.unique_error_message(Cluster, ["name"])]})
    conflicts = cluster._host_port_conflicts(using)
    if conflicts:
        return ValidationError({field: [message] for field, message in conflicts.items()})
    return None


def request_delete(cluster: Cluster) -> OperationLog:
    """Mark a cluster to be deleted and queue its deletion."""
    if cluster.is_protected:
        raise ClusterProtectedError(f"The {cluster.name} cluster cannot be deleted.")
    using = router.db_for_write(Cluster, instance=cluster)
    with transaction.atomic(using=using, savepoint=False):
        cluster.desired_state = DesiredState.ABSENT
        # UPDATE desired_state: what the reconciler acts on (it deletes the row).
        cluster.save(using=using, update_fields=["desired_state", "updated_at"])
        # INSERT the operation: the task the caller is given.
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
