"""How much the failover router costs: the same ORM read routed vs with using=.

Run: .venv/bin/python bench/router.py [--iterations N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script: import the project from the checkout root.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench._setup import configure_django, start_postgres  # noqa: E402


def per_op_us(operation: Callable[[], object], iterations: int) -> float:
    started = time.perf_counter()
    for _ in range(iterations):
        operation()
    return (time.perf_counter() - started) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    server = start_postgres()
    try:
        configure_django(server)
        run(args.iterations, args.rounds)
    finally:
        from kindler.db.failover.monitor import monitor

        monitor.stop()
        server.destroy()


def run(iterations: int, rounds: int) -> None:
    from clusters.models import Cluster
    from kindler.db.failover.pinning import pinned_alias
    from kindler.db.failover.routers import FailoverRouter

    # Created on PostgreSQL; the write-through copies it into SQLite too.
    Cluster.objects.using("postgres").create(name="bench", http_port=20000)
    assert Cluster.objects.using("sqlite").filter(name="bench").exists()

    print(f"ORM read: Cluster.objects.filter(name=...).first(), {iterations} x {rounds} rounds")
    print(f"{'alias':<10}{'routed µs':>12}{'explicit µs':>14}{'ratio':>8}")
    for alias in ("postgres", "sqlite"):
        routed, explicit = [], []

        def read_explicit(using: str = alias) -> object:
            return Cluster.objects.using(using).filter(name="bench").first()

        for _ in range(rounds):
            # Interleaved rounds so drift on a shared machine hits both sides.
            with pinned_alias(alias) if alias == "sqlite" else _nothing():
                routed.append(
                    per_op_us(lambda: Cluster.objects.filter(name="bench").first(), iterations)
                )
            explicit.append(per_op_us(read_explicit, iterations))
        r, e = statistics.median(routed), statistics.median(explicit)
        print(f"{alias:<10}{r:>12.1f}{e:>14.1f}{r / e:>8.3f}")
    router = FailoverRouter()
    cost = per_op_us(lambda: router.db_for_read(Cluster), 200_000)
    print(f"router.db_for_read alone: {cost * 1000:.0f} ns per call")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
