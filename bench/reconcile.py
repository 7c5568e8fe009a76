"""How long one reconcile pass takes with 1,000 clusters and nothing to do.

Every cluster is desired present and already running, as the fake k3d and
kind (tests/fakes, first on PATH) report. Two figures per database: an idle
pass, which reuses the providers' last listing (as the reconciler does for
KINDLER_OBSERVE_INTERVAL seconds while nothing needs doing), and a pass that
lists them (`k3d cluster list -o json`, `kind get clusters` and `docker ps`
in parallel; here the Python fakes, whose start-up dominates the figure).

Then the same 1,000 clusters placed over 3 Docker hosts: one host's
reconciler (with its registration, which keeps each fresh listing for the
status API) passes over its third; and the registry's cost: one heartbeat,
and one observation written after a listing.

Run: .venv/bin/python bench/reconcile.py [--clusters 1000] [--passes 30] [--hosts 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script: import the project from the checkout root.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench._setup import configure_django, start_postgres  # noqa: E402

TARGET_MS = 100.0
KIND_SHARE = 4  # every fourth cluster is a kind cluster


def host_of(index: int, hosts: int) -> str:
    return f"docker-{index % hosts}"


def fill(alias: str, count: int, hosts: int = 1) -> None:
    """Put count running clusters over hosts into alias, ports and names distinct."""
    from clusters.models import Cluster

    Cluster.objects.using(alias).all().delete()
    Cluster.objects.using(alias).bulk_create(
        [
            Cluster(
                name=f"env-{index:04d}",
                host=host_of(index, hosts),
                provider="kind" if index % KIND_SHARE == 0 else "k3d",
                http_port=20000 + index * 3,
                https_port=20001 + index * 3,
                pf_port=20002 + index * 3,
                desired_state="present",
                actual_state="running",
            )
            for index in range(count)
        ],
        batch_size=500,
    )


def fake_state(count: int, hosts: int = 1, host: str = "docker-0") -> Path:
    """Make one host's fake providers run its clusters; return their state folder."""
    state = Path(tempfile.mkdtemp(prefix="kindler-bench-fakes-"))
    clusters = {
        f"env-{index:04d}": {
            "provider": "kind" if index % KIND_SHARE == 0 else "k3d",
            "running": True,
        }
        for index in range(count)
        if host_of(index, hosts) == host
    }
    (state / "clusters.json").write_text(json.dumps(clusters))
    return state


def timed_passes(
    passes: int, observe_interval: float, host: str = "docker-0", registered: bool = False
) -> list[float]:
    from django.conf import settings

    from clusters.reconciler import Reconciler
    from clusters.registry import Heartbeat

    settings.KINDLER_OBSERVE_INTERVAL = observe_interval
    heartbeat = Heartbeat(host=host, providers=PROVIDERS) if registered else None
    reconciler = Reconciler(host=host, heartbeat=heartbeat)
    timings = []
    for number in range(passes + 2):
        started = time.perf_counter()
        report = reconciler.run_once()
        elapsed = (time.perf_counter() - started) * 1000
        if report.actions or report.database_error:
            raise SystemExit(f"the pass did something: {report}")
        if number >= 2:  # the first two warm connections and caches
            timings.append(elapsed)
    return timings


PROVIDERS = {"k3d": "v5.7.4", "kind": "v0.24.0"}


def timed_registry(passes: int, clusters: int, host: str = "docker-0") -> dict[str, list[float]]:
    """Time one heartbeat, and one observation of a host's clusters written after a listing."""
    from clusters.drivers import ClusterStatus
    from clusters.registry import Heartbeat

    heartbeat = Heartbeat(host=host, providers=PROVIDERS)
    heartbeat.beat()
    listing = {
        "k3d": {
            f"env-{index:04d}": ClusterStatus(f"env-{index:04d}", "running", 1, 1)
            for index in range(clusters)
        }
    }
    timings: dict[str, list[float]] = {"beat": [], "observation": []}
    for number in range(passes + 2):
        for what, write in (
            ("beat", heartbeat.beat),
            ("observation", lambda: heartbeat.record_observation(listing)),
        ):
            started = time.perf_counter()
            write()
            if number >= 2:
                timings[what].append((time.perf_counter() - started) * 1000)
    return timings


def describe(timings: list[float]) -> str:
    ordered = sorted(timings)
    p95 = ordered[max(0, round(len(ordered) * 0.95) - 1)]
    return (
        f"median {statistics.median(ordered):7.1f} ms   p95 {p95:7.1f} ms   "
        f"min {ordered[0]:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=30)
    parser.add_argument("--hosts", type=int, default=3)
    args = parser.parse_args()
    fakes = Path(__file__).resolve().parent.parent / "tests" / "fakes"
    os.environ["PATH"] = os.pathsep.join(
        [str(fakes), os.path.dirname(sys.executable), os.environ.get("PATH", "")]
    )
    os.environ["KINDLER_FAKE_STATE"] = str(fake_state(args.clusters))
    os.environ["KINDLER_CHILD_ENV"] = "KINDLER_FAKE_*"
    server = start_postgres()
    try:
        configure_django(server)
        from kindler.db.failover.pinning import pinned_alias

        print(
            f"One reconcile pass, {args.clusters} clusters, nothing to do "
            f"({args.passes} passes each; target <= {TARGET_MS:g} ms)"
        )
        for alias in ("postgres", "sqlite"):
            with pinned_alias(alias):
                fill(alias, args.clusters)
                listing = timed_passes(args.passes, observe_interval=0)
                idle = timed_passes(args.passes, observe_interval=3600)
            print(f"{alias:<9} idle pass (provider listings reused)   {describe(idle)}")
            print(f"{alias:<9} pass that lists the providers          {describe(listing)}")
        mine = len(range(0, args.clusters, args.hosts))
        os.environ["KINDLER_FAKE_STATE"] = str(fake_state(args.clusters, args.hosts))
        print(
            f"\nThe same {args.clusters} clusters over {args.hosts} Docker hosts: the pass of "
            f"docker-0's reconciler ({mine} of them), registered; and the registry"
        )
        for alias in ("postgres", "sqlite"):
            with pinned_alias(alias):
                fill(alias, args.clusters, args.hosts)
                listing = timed_passes(args.passes, observe_interval=0, registered=True)
                idle = timed_passes(args.passes, observe_interval=3600, registered=True)
                registry = timed_registry(args.passes, mine)
            print(f"{alias:<9} idle pass, one host's clusters          {describe(idle)}")
            print(f"{alias:<9} listing pass (observation written)      {describe(listing)}")
            beat, observation = registry["beat"], registry["observation"]
            label = f"observation of {mine} clusters (+ beat)"
            print(f"{alias:<9} one heartbeat                           {describe(beat)}")
            print(f"{alias:<9} {label:<39} {describe(observation)}")
    finally:
        from kindler.db.failover.monitor import monitor

        monitor.stop()
        server.destroy()


if __name__ == "__main__":
    main()
