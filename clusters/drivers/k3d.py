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
    ipv4_or_none,
    seconds,
)

# Far above any real cluster; a larger count is not k3d's output.
MAX_NODES = 10_000


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

    def server_ip(self, name: str) -> str | None:
        output = capture(("k3d", "cluster", "list", "-o", "json"))
        return server_address(output, name)


def server_address(output: str, name: str) -> str | None:
    """Return the first server node's address of cluster name in `k3d cluster list -o json`.

    Each node carries its container's address as IP.IP; a stopped node has
    none. Raise DriverError when the output does not list the cluster.
    """
    parse_list(output)  # the same checks as a listing
    for item in json.loads(output or "[]"):
        if item["name"] != name:
            continue
        nodes = item.get("nodes")
        if not isinstance(nodes, list):
            raise DriverError(f"k3d cluster list -o json printed no nodes for {name}")
        for node in nodes:
            if isinstance(node, dict) and node.get("role") == "server":
                address = node.get("IP")
                return ipv4_or_none(address.get("IP") if isinstance(address, dict) else None)
        return None
    raise DriverError(f"k3d cluster list -o json does not list {name}")


def parse_list(output: str) -> dict[str, ClusterStatus]:
    """Return the clusters in `k3d cluster list -o json` output, by name."""
    try:
        items = json.loads(output or "[]")
    except (ValueError, RecursionError):
        raise DriverError("k3d cluster list -o json printed something that is not JSON") from None
    if not isinstance(items, list):
        raise DriverError("k3d cluster list -o json did not print a list")
    statuses: dict[str, ClusterStatus] = {}
    for item in items:
        status = parse_item(item)
        statuses[status.name] = status
    return statuses


def parse_item(item: Any) -> ClusterStatus:
    """Return one entry of k3d's list; raise DriverError when it is not what k3d prints."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise DriverError("k3d cluster list -o json printed an entry without a name")
    servers_running, agents_running, servers, agents = (
        count(item, key)
        for key in ("serversRunning", "agentsRunning", "serversCount", "agentsCount")
    )
    state = "running" if servers_running > 0 else "stopped"
    return ClusterStatus(item["name"], state, servers_running + agents_running, servers + agents)


def count(item: dict[str, Any], key: str) -> int:
    """Return a node count of a k3d entry (0 when absent); raise DriverError when not a count."""
    value = item.get(key) or 0
    # bool is an int, and a float such as 1e400 (inf) is not a count.
    if type(value) is not int or not 0 <= value <= MAX_NODES:
        raise DriverError(f"k3d cluster list -o json printed {key} {value!r}, not a node count")
    return value
