"""Time the write-through copy of a save into SQLite, with and without its acknowledged version.

    .venv/bin/python bench/writethrough.py

Saves a cluster (a small row) and an operation log holding 200,000
characters of output (the largest row Kindler writes, flushed while a
command runs) on a throwaway PostgreSQL, SAVES times each, and prints the
median and p99 of the whole save, of its copy into SQLite, and of the part
of the copy that keeps the acknowledged version (kindler.db.sync.acknowledged:
the digest and one insert; the read of SQLite's row before the copy is in the
copy's figure). Run on a shared machine: the figures move with its load,
printed beside them.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The script folder holds other benchmarks (bench/api.py) that would shadow
# the standard library: import from the project root instead.
sys.path[0] = str(ROOT)

SAVES = 300


def timed(samples: list[float], call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            samples.append(time.perf_counter() - started)

    return wrapper


def figures(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


def main() -> None:
    from bench._setup import configure_django, start_postgres

    server = start_postgres()
    try:
        configure_django(server)
        from clusters.models import Cluster, OperationLog
        from kindler.db.sync import acknowledged, writethrough

        kept: list[float] = []
        acknowledged.version_of = timed(kept, acknowledged.version_of)  # type: ignore[assignment]
        acknowledged.record = timed(kept, acknowledged.record)  # type: ignore[assignment]
        copies: list[float] = []
        writethrough.copy_to_sqlite = timed(copies, writethrough.copy_to_sqlite)  # type: ignore[assignment]
        cluster = Cluster.objects.using("postgres").create(name="bench")
        log = OperationLog.objects.using("postgres").create(
            cluster_name="bench", operation="create", log_output="x" * 200_000
        )
        print(f"load {os.getloadavg()[0]:.2f}, {SAVES} saves each")
        for label, row, field in (
            ("cluster", cluster, "reconcile_error"),
            ("log", log, "error_message"),
        ):
            saves: list[float] = []
            kept.clear()
            copies.clear()
            for n in range(SAVES):
                setattr(row, field, f"change {n}")
                started = time.perf_counter()
                row.save(using="postgres")
                saves.append(time.perf_counter() - started)
            # version_of and record run once per copy each: add them pairwise.
            per_copy = [a + b for a, b in zip(kept[0::2], kept[1::2], strict=True)]
            print(
                f"{label}: save {figures(saves)}; copy into SQLite {figures(copies)}; "
                f"of which the acknowledged version {figures(per_copy)}"
            )
        print(f"load {os.getloadavg()[0]:.2f}")
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
