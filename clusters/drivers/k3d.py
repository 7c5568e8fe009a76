"""k3d: clusters of k3s nodes in Docker containers, driven by `k3d cluster ...`."""

from __future__ import annotations

import json
from typing import Any

from clusters.drivers.base import (
    ClusterStatus,
    Command,
    Driver,
    DriverError,
    capture,
    seconds,
)


class K3dDriver(Driver):
    provider = "k3d"
    binary = "k3d"

    def create(self, cluster: Any, timeout: float) -> Command:
        argv = [
            "k3d",
            "cluster",
            "create",
            cluster.name,
            "--servers",
            "1",
            "--agents",
            "0",
            "-p",
            f"{cluster.http_port}:80@loadbalancer",
            "-p",
            f"{cluster.https_port}:443@loadbalancer",
            # pf_port forwards to the NodePort every cluster serves its apps on.
            "-p",
            f"{cluster.pf_port}:{cluster.node_port}@server:0",
        ]
        if cluster.subnet:
            argv += ["--subnet", cluster.subnet]
        argv += ["--wait", "--timeout", seconds(timeout)]
        return Command(tuple(argv))

    def delete(self, cluster: Any) -> Command:
        return Command(("k3d", "cluster", "delete", cluster.name))

    def start(self, cluster: Any) -> Command:
        return Command(("k3d", "cluster", "start", cluster.name))

    def stop(self, cluster: Any) -> Command:
        return Command(("k3d", "cluster", "stop", cluster.name))

    def list_clusters(self) -> dict[str, ClusterStatus]:
        output = capture(("k3d", "cluster", "list", "-o", "json"))
        return parse_list(output)


def parse_list(output: str) -> dict[str, ClusterStatus]:
    """Return the clusters in `k3d cluster list -o json` output, by name."""
    try:
        items = json.loads(output or "[]")
    except ValueError:
        raise DriverError("k3d cluster list -o json printed something that is not JSON") from None
    if not isinstance(items, list):
        raise DriverError("k3d cluster list -o json did not print a list")
    statuses: dict[str, ClusterStatus] = {}
    for item in items:
        servers_running = int(item.get("serversRunning") or 0)
        ready = servers_running + int(item.get("agentsRunning") or 0)
        total = int(item.get("serversCount") or 0) + int(item.get("agentsCount") or 0)
        state = "running" if servers_running > 0 else "stopped"
        statuses[item["name"]] = ClusterStatus(item["name"], state, ready, total)
    return statuses
