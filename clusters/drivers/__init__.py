"""Drivers that run a provider's CLI (k3d, kind) for the reconciler.

The interface is small on purpose: create, delete, start, stop, and the
state of every cluster the provider knows about.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterStatus:
    """What a provider reports about one cluster."""

    name: str
    state: str  # an ActualState value: running, stopped, absent, ...
    nodes_ready: int
    nodes_total: int
