"""Kindler: inventory and lifecycle of local Kubernetes clusters."""

__version__ = "0.1.0"
