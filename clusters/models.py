"""Clusters and the log of every operation run on them."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection, Sequence
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, router
from django.db.models import Q

from clusters.validators import (
    HOST_NAME,
    MAX_PORT,
    MIN_PORT,
    port_validators,
    validate_dns_label,
    validate_host_name,
    validate_ipv4_cidr,
)
from kindler.db.models import SyncedModel, SyncedQuerySet

PROTECTED_CLUSTERS = frozenset({"devops"})
HOST_PORT_FIELDS = ("http_port", "https_port", "pf_port")


class ClusterProtectedError(ValidationError):
    """Raised when someone tries to delete a cluster Kindler itself needs."""


class Provider(models.TextChoices):
    K3D = "k3d", "k3d"
    KIND = "kind", "kind"


class DesiredState(models.TextChoices):
    PRESENT = "present", "present"
    STOPPED = "stopped", "stopped"
    ABSENT = "absent", "absent"


class ActualState(models.TextChoices):
    UNKNOWN = "unknown", "unknown"
    CREATING = "creating", "creating"
    RUNNING = "running", "running"
    STOPPED = "stopped", "stopped"
    FAILED = "failed", "failed"
    DELETING = "deleting", "deleting"
    ABSENT = "absent", "absent"


def default_host() -> str:
    """Return the Docker host of a cluster nobody placed: KINDLER_DEFAULT_HOST, or this machine.

    The model's default reads no database; requests pick among the hosts with
    a live reconciler first (clusters.placement).
    """
    return str(settings.KINDLER_DEFAULT_HOST or settings.KINDLER_HOST_NAME)


class ClusterQuerySet(SyncedQuerySet):
    def delete(self) -> tuple[int, dict[str, int]]:
        protected = sorted(self.filter(name__in=PROTECTED_CLUSTERS).values_list("name", flat=True))
        if protected:
            raise ClusterProtectedError(
                f"The {protected[0]} cluster cannot be deleted.", code="protected"
            )
        return super().delete()


class Cluster(SyncedModel):
    name = models.CharField(
        max_length=63,
        unique=True,
        validators=[validate_dns_label],
    )
    provider = models.CharField(max_length=8, choices=Provider.choices, default=Provider.K3D)
    # The Docker host whose reconciler creates and runs the cluster.
    # db_default: instances of code before this column insert without it (unplaced, "").
    host = models.CharField(
        max_length=253,
        default=default_host,
        db_default="",
        validators=[validate_host_name],
        db_index=True,
    )
    node_port = models.PositiveIntegerField(default=30080, validators=port_validators)
    pf_port = models.PositiveIntegerField(default=19000, validators=port_validators)
    http_port = models.PositiveIntegerField(default=18080, validators=port_validators)
    https_port = models.PositiveIntegerField(default=18443, validators=port_validators)
    subnet = models.CharField(
        max_length=43, blank=True, default="", validators=[validate_ipv4_cidr]
    )
    server_ip = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True)
    register_portainer = models.BooleanField(default=True)
    haproxy_route = models.BooleanField(default=True)
    register_argocd = models.BooleanField(default=True)
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.PRESENT
    )
    actual_state = models.CharField(
        max_length=16, choices=ActualState.choices, default=ActualState.UNKNOWN
    )
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    reconcile_error = models.TextField(blank=True, default="")
    # The account that asked for the cluster, for KINDLER_MAX_CLUSTERS_PER_USER;
    # empty for the API token, the command line and clusters older than 0.4.0.
    created_by = models.CharField(max_length=150, blank=True, default="", db_default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects: ClassVar[Any] = ClusterQuerySet.as_manager()

    # A port may appear once across these columns of the rows on one Docker
    # host. The sync layer's replay reads this to turn a replayed change that
    # would take a port another cluster on the host holds into a conflict
    # instead of a failed batch.
    exclusive_fields: ClassVar[tuple[str, ...]] = HOST_PORT_FIELDS
    exclusive_scope: ClassVar[str | None] = "host"

    class Meta:
        ordering = ["name"]
        permissions = [("operate_cluster", "Can start and stop cluster")]
        # The dashboard's summary counts clusters by state on every load:
        # from this index rather than the table (128 ms at 100,000 on SQLite).
        indexes = [models.Index(fields=["actual_state"], name="clusters_actual_state_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_protected(self) -> bool:
        return self.name in PROTECTED_CLUSTERS

    def unique_error_message(
        self, model_class: type[models.Model], unique_check: Sequence[str]
    ) -> ValidationError:
        if tuple(unique_check) == ("name",):
            return ValidationError(
                "A cluster named %(name)s already exists.",
                code="unique",
                params={"name": self.name},
            )
        return super().unique_error_message(model_class, unique_check)

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.is_protected and self.desired_state == DesiredState.ABSENT:
            errors["desired_state"] = [f"The {self.name} cluster cannot be deleted."]
        if self.subnet and self.provider != Provider.K3D:
            errors.setdefault("subnet", []).append(
                f"A subnet can only be set for k3d clusters; {self.provider} assigns its own."
            )
        if errors:
            raise ValidationError(errors)

    def validate_unique(self, exclude: Collection[str] | None = None) -> None:
        """Check the unique columns, and that no other cluster holds these host ports.

        Both need a query; a write that skips them (full_clean(validate_unique=False))
        still cannot clash: the name's unique index and the port claims refuse it.
        """
        errors: dict[str, list[Any]] = {}
        try:
            super().validate_unique(exclude=exclude)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        for field, message in self._host_port_conflicts().items():
            errors.setdefault(field, []).append(message)
        if errors:
            raise ValidationError(errors)

    def _host_port_conflicts(self, using: str | None = None) -> dict[str, str]:
        ports = {field: getattr(self, field) for field in HOST_PORT_FIELDS}
        conflicts: dict[str, str] = {}
        seen: dict[int, str] = {}
        for field, port in ports.items():
            # A port out of range is the field validators' error; looking it
            # up would overflow the database's integer.
            if not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
                continue
            if port in seen:
                conflicts[field] = f"Port {port} is already used by this cluster's {seen[port]}."
            seen.setdefault(port, field)
        # A host that is not a host name is the field validator's error;
        # looking it up could hand the database a character it refuses.
        if not seen or not HOST_NAME.fullmatch(self.host or ""):
            return conflicts
        using = using or self._state.db or router.db_for_read(Cluster, instance=self)
        match = Q()
        for field in HOST_PORT_FIELDS:
            match |= Q(**{f"{field}__in": list(seen)})
        others = Cluster.objects.using(using).filter(match, host=self.host).exclude(pk=self.pk)
        for other in others.only("name", *HOST_PORT_FIELDS):
            taken = {getattr(other, field) for field in HOST_PORT_FIELDS}
            for field, port in ports.items():
                if port in taken and field not in conflicts:
                    conflicts[field] = f"Port {port} is already used by cluster {other.name}."
        return conflicts

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        if self.is_protected:
            raise ClusterProtectedError(
                f"The {self.name} cluster cannot be deleted.", code="protected"
            )
        return super().delete(*args, **kwargs)

    def overlapping_subnet(self) -> Cluster | None:
        """Return another cluster on the same Docker host whose subnet overlaps this one's."""
        if not self.subnet or not HOST_NAME.fullmatch(self.host or ""):
            return None
        mine = ipaddress.ip_network(self.subnet, strict=False)
        using = self._state.db or router.db_for_read(Cluster, instance=self)
        others = Cluster.objects.using(using).filter(host=self.host).exclude(subnet="")
        for other in others.exclude(pk=self.pk):
            if mine.overlaps(ipaddress.ip_network(other.subnet, strict=False)):
                return other
        return None


class PortClaim(models.Model):
    """A port one cluster holds on its Docker host; unique per host under races.

    Kept in step by triggers on the cluster table (clusters.portclaims) in
    both databases, so every writer is covered: concurrent requests, raw SQL
    and replayed changes alike. Each database derives its own claims from its
    own clusters, so the table is not synced.
    """

    host = models.CharField(max_length=253, default="", db_default="")
    port = models.PositiveIntegerField()
    cluster_uid = models.UUIDField(db_index=True)
    field = models.CharField(max_length=16)

    class Meta:
        ordering = ["host", "port"]
        constraints = [
            models.UniqueConstraint(fields=["host", "port"], name="clusters_portclaim_host_port")
        ]

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.field} of {self.cluster_uid})"


def free_host_ports(host: str | None = None) -> dict[str, int]:
    """Return, per host port field, the lowest port free on host from the field's default up."""
    used: set[int] = set()
    clusters = Cluster.objects.filter(host=host or default_host())
    for ports in clusters.values_list(*HOST_PORT_FIELDS):
        used.update(ports)
    suggestions: dict[str, int] = {}
    defaults = Cluster()
    for field in HOST_PORT_FIELDS:
        port = int(getattr(defaults, field))
        while port in used and port < 65535:
            port += 1
        used.add(port)
        suggestions[field] = port
    return suggestions


class Operation(models.TextChoices):
    CREATE = "create", "create"
    DELETE = "delete", "delete"
    START = "start", "start"
    STOP = "stop", "stop"
    IMPORT = "import", "import"


class OperationStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    SUCCESS = "success", "success"
    FAILED = "failed", "failed"
    TIMEOUT = "timeout", "timeout"


class OperationLog(SyncedModel):
    # By name, not a foreign key: the history outlives the cluster.
    cluster_name = models.CharField(max_length=63, db_index=True)
    operation = models.CharField(max_length=16, choices=Operation.choices)
    status = models.CharField(
        max_length=16, choices=OperationStatus.choices, default=OperationStatus.PENDING
    )
    command = models.TextField(blank=True, default="")
    log_output = models.TextField(blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    exit_code = models.IntegerField(null=True, blank=True)
    # What the post-operation hooks did (clusters/hooks.py), as JSON text; NULL
    # when none ran. Text, not a JSONField: the sync layer copies rows column
    # by column as they are stored. No default: adding the column then needs
    # no table rebuild on SQLite.
    hooks = models.TextField(null=True, blank=True)  # noqa: DJ001
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["cluster_name", "-created_at"]),
            # The System page and the metrics count operations by result: from
            # this index, not a million rows of logs (2.4 s on SQLite).
            models.Index(fields=["operation", "status"], name="operation_result_idx"),
            # A cluster's page looks for its latest operations that ran hooks;
            # with none among 10,000 the search read them all, twice.
            models.Index(
                fields=["cluster_name", "-created_at", "-id"],
                condition=models.Q(hooks__isnull=False),
                name="operation_hooks_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.cluster_name} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()

    @property
    def hook_results(self) -> list[dict[str, Any]] | None:
        """Return what each hook did, in the order they ran; None when none ran."""
        if not self.hooks:
            return None
        try:
            results = json.loads(self.hooks)
        except ValueError:
            return None
        return [entry for entry in results if isinstance(entry, dict)]

    @property
    def hook_warning(self) -> str:
        """Return the warning failed hooks put on this operation, or an empty string."""
        failed = [entry for entry in self.hook_results or [] if entry.get("status") != "ok"]
        if not failed:
            return ""
        names = ", ".join(str(entry.get("hook")) for entry in failed)
        noun = "Hook" if len(failed) == 1 else "Hooks"
        return f"{noun} {names} did not succeed; the operation itself did."


class Registration(models.Model):
    """A running reconciler: where it runs, what it can run, when it was last heard from.

    Not synced by the journal: a heartbeat is true only while it is fresh, and
    each process writes its own where writes go now (PostgreSQL, or SQLite
    during an outage). Carrying beats across databases would replay stale
    liveness and make conflicts out of rows only one process ever writes.
    """

    key = models.UUIDField(unique=True)
    host = models.CharField(max_length=253, db_index=True)
    pid = models.PositiveIntegerField()
    version = models.CharField(max_length=32)
    # provider -> the version its CLI reported, for the providers found on PATH.
    providers = models.JSONField(default=dict)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    # What the providers listed at observed_at: name -> [state, nodes ready, nodes total].
    observed = models.JSONField(default=dict)
    observed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "started_at"]

    def __str__(self) -> str:
        return f"reconciler {self.pid} on {self.host}"
