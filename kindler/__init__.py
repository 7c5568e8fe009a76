"""Kindler: inventory and lifecycle of local Kubernetes clusters."""

__version__ = "0.5.0"
