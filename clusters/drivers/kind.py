"""kind: Kubernetes nodes as Docker containers, driven by `kind` (and `docker` to stop/start).

kind has no stop or start of its own. Like the original Kindler, Kindler stops
and starts the node container with `docker stop|start <name>-control-plane`;
the clusters it creates have exactly that one node, and kind's node containers
restart cleanly.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
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

CLUSTER_LABEL = "io.x-k8s.kind.cluster"
# The Docker network kind puts every node on.
NETWORK = "kind"
PS_FORMAT = '{{.Label "' + CLUSTER_LABEL + '"}}\t{{.State}}'


def config(cluster: Any) -> str:
    """Return the kind cluster configuration for cluster, as YAML."""
    mappings = [(80, cluster.http_port), (443, cluster.https_port)]
    mappings.append((cluster.node_port, cluster.pf_port))
    lines = [
        "kind: Cluster",
        "apiVersion: kind.x-k8s.io/v1alpha4",
        f"name: {cluster.name}",
        "nodes:",
        "- role: control-plane",
        "  extraPortMappings:",
    ]
    for container_port, host_port in mappings:
        lines += [
            f"  - containerPort: {container_port}",
            f"    hostPort: {host_port}",
            "    protocol: TCP",
        ]
    return "\n".join(lines) + "\n"


def node_container(name: str) -> str:
    return f"{name}-control-plane"


class KindDriver(Driver):
    provider = "kind"
    binary = "kind"

    def create(self, cluster: Any, timeout: float) -> Command:
        argv = ("kind", "create", "cluster", "--name", cluster.name, "--config", "-")
        return Command((*argv, "--wait", seconds(timeout)), stdin=config(cluster))

    def delete(self, cluster: Any) -> Command:
        return Command(("kind", "delete", "cluster", "--name", cluster.name))

    def start(self, cluster: Any) -> Command:
        return Command(("docker", "start", node_container(cluster.name)))

    def stop(self, cluster: Any) -> Command:
        return Command(("docker", "stop", node_container(cluster.name)))

    def server_ip(self, name: str) -> str | None:
        output = capture(("docker", "inspect", "--type", "container", node_container(name)))
        return container_address(output)

    def list_clusters(self) -> dict[str, ClusterStatus]:
        # Both at once: a reconcile pass waits for the slower one only.
        with ThreadPoolExecutor(max_workers=1) as pool:
            ps = pool.submit(
                capture,
                ("docker", "ps", "-a", "--filter", f"label={CLUSTER_LABEL}", "--format", PS_FORMAT),
            )
            listed = capture(("kind", "get", "clusters"))
            containers = ps.result()
        names = [line.strip() for line in listed.splitlines() if line.strip()]
        running: dict[str, int] = {}
        total: dict[str, int] = {}
        for line in containers.splitlines():
            cluster, _, state = line.partition("\t")
            total[cluster] = total.get(cluster, 0) + 1
            running[cluster] = running.get(cluster, 0) + (state.strip() == "running")
        return {
            name: ClusterStatus(
                name,
                "running" if running.get(name) else "stopped",
                running.get(name, 0),
                total.get(name, 0),
            )
            for name in names
        }


def container_address(output: str) -> str | None:
    """Return the node's address on kind's network from `docker inspect` output.

    A stopped container has none. Raise DriverError when the output is not
    docker's.
    """
    try:
        [container] = json.loads(output)
        networks = container["NetworkSettings"]["Networks"]
        address = networks[NETWORK]["IPAddress"] if NETWORK in networks else None
    except (ValueError, RecursionError, TypeError, KeyError):
        raise DriverError("docker inspect printed something that is not one container") from None
    return ipv4_or_none(address)
