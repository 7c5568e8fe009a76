"""Checks run before a cluster is created, so a create fails early with a clear reason."""

from __future__ import annotations

import errno
import shutil
import socket

from django.core.exceptions import ValidationError

from clusters import placement, registry
from clusters.drivers import driver_for
from clusters.models import HOST_PORT_FIELDS, Cluster
from clusters.validators import one_line

BIND_ADDRESSES = ("0.0.0.0", "127.0.0.1")


def port_in_use(port: int) -> bool:
    """Return True when something on this host already listens on port (TCP)."""
    for address in BIND_ADDRESSES:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR: a port left in TIME_WAIT by a closed connection is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
    return False


def inventory_errors(cluster: Cluster) -> dict[str, list[str]]:
    """Return conflicts with the inventory and a provider binary missing here, by field."""
    errors: dict[str, list[str]] = {}
    for field, message in cluster._host_port_conflicts().items():
        errors.setdefault(field, []).append(message)
    for field, messages in subnet_errors(cluster).items():
        errors.setdefault(field, []).extend(messages)
    binary = driver_for(cluster.provider).binary
    if shutil.which(binary) is None:
        errors.setdefault("provider", []).append(
            f"{binary} not found on PATH; {registry.install_hint(cluster.provider)}"
        )
    return errors


def subnet_errors(cluster: Cluster) -> dict[str, list[str]]:
    """Return the cluster's subnet when another cluster's overlaps it."""
    other = cluster.overlapping_subnet()
    if other is None:
        return {}
    return {"subnet": [f"subnet {cluster.subnet} overlaps cluster {other.name}"]}


def check_subnet(cluster: Cluster) -> None:
    """Raise ValidationError when another cluster's subnet overlaps this one's."""
    errors = subnet_errors(cluster)
    if errors:
        raise ValidationError(errors)


def request_errors(cluster: Cluster) -> dict[str, list[str]]:
    """Return what model validation does not cover: subnet overlaps, a provider the host lacks.

    The provider is checked against the registry, never this process's PATH:
    the reconciler of the cluster's host runs it.
    """
    errors = subnet_errors(cluster)
    refusal = placement.provider_refusal(cluster.host, cluster.provider)
    if refusal is not None:
        errors.setdefault("provider", []).append(refusal)
    return errors


def host_port_errors(cluster: Cluster) -> dict[str, list[str]]:
    """Return the cluster's host ports that another process on this host listens on.

    Run by the reconciler, on the Docker host where k3d and kind publish the
    ports, just before it creates the cluster.
    """
    errors: dict[str, list[str]] = {}
    for field in HOST_PORT_FIELDS:
        port = getattr(cluster, field)
        if port_in_use(port):
            errors.setdefault(field, []).append(f"port {port} is in use by another process")
    return errors


def check_request(cluster: Cluster) -> None:
    """Raise ValidationError (by field) when a cluster cannot be asked for as it is.

    Port conflicts with the inventory are the model's own validation
    (full_clean), already run by the caller.
    """
    errors = request_errors(cluster)
    if errors:
        raise ValidationError(errors)


def check_create(cluster: Cluster, exists: bool) -> None:
    """Raise ValidationError when creating cluster now would fail.

    exists says the provider already has the cluster (a create that failed
    half-way, say): its ports are then bound by the cluster itself, so the
    bind test is skipped rather than blaming them on another process.
    """
    errors = inventory_errors(cluster)
    if not exists:
        for field, messages in host_port_errors(cluster).items():
            errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)


def failure_message(error: ValidationError) -> str:
    """Return a preflight failure as one line for an operation log."""
    if not hasattr(error, "error_dict"):
        return "Preflight failed: " + one_line(error)
    problems = [
        f"{field}: {message}"
        for field, messages in error.message_dict.items()
        for message in messages
    ]
    return "Preflight failed: " + "; ".join(problems)
