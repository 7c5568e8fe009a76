"""Drivers that run a provider's CLI (k3d, kind) for the reconciler.

The interface is small on purpose: create, delete, start, stop, and the
state of every cluster the provider knows about.
"""

from __future__ import annotations

from typing import Any

from clusters.drivers.base import ClusterStatus, Command, Driver, DriverError, Result
from clusters.drivers.k3d import K3dDriver
from clusters.drivers.kind import KindDriver

__all__ = [
    "ClusterStatus",
    "Command",
    "Driver",
    "DriverError",
    "Result",
    "cluster_status",
    "driver_for",
]

DRIVERS: dict[str, type[Driver]] = {"k3d": K3dDriver, "kind": KindDriver}


def driver_for(provider: str) -> Driver:
    """Return the driver for a provider name (k3d or kind)."""
    try:
        return DRIVERS[provider]()
    except KeyError:
        raise ValueError(
            f"Unknown provider {provider!r}; use one of {', '.join(DRIVERS)}."
        ) from None


def cluster_status(cluster: Any) -> ClusterStatus:
    """Ask the cluster's provider what it has; unknown (0/0 nodes) when it cannot say."""
    try:
        return driver_for(cluster.provider).status(cluster.name)
    except (DriverError, ValueError):
        return ClusterStatus(cluster.name, "unknown", 0, 0)
