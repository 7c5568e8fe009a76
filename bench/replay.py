"""Time the journal replay and the mirror on a throwaway PostgreSQL.

    .venv/bin/python bench/replay.py

Replays a journal of 10,000 changes (target: at least 5,000 changes/s),
then mirrors 5,000 clusters and 100,000 operations into an empty SQLite
file (first run) and again with nothing changed (target: at most 50 ms).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The script folder holds other benchmarks (bench/api.py) that would shadow
# the standard library: import from the project root instead.
sys.path[0] = str(ROOT)

CHANGES = 10_000
CLUSTERS = 5_000
OPERATIONS = 100_000
INCREMENTAL_RUNS = 5


def ports(index: int) -> dict[str, int]:
    """Return host ports no other benchmark cluster holds (the database enforces it)."""
    base = 20000 + 3 * index
    return {"http_port": base, "https_port": base + 1, "pf_port": base + 2}


def bench_replay() -> None:
    from clusters.models import Cluster
    from kindler.db.failover.pinning import pinned_alias
    from kindler.db.models import JournalEntry
    from kindler.db.sync.replay import replay

    inserts = CHANGES // 4
    with pinned_alias("sqlite"):
        Cluster.objects.bulk_create(
            [Cluster(name=f"replay-{i}", **ports(i)) for i in range(inserts)]
        )
        for port in (30000, 30001, 30002):
            Cluster.objects.filter(name__startswith="replay-").update(node_port=port)
    journaled = JournalEntry.objects.using("sqlite").count()
    started = time.perf_counter()
    report = replay()
    seconds = time.perf_counter() - started
    print(
        f"replay: {journaled} changes in {seconds:.2f} s = {journaled / seconds:,.0f} changes/s "
        f"(pushed {report.pushed}, conflicts {report.conflicts}; target >= 5,000/s)"
    )


def bench_mirror() -> None:
    from django.db import connections

    from clusters.models import Cluster, OperationLog
    from kindler.db.sync.journal import journal_suppressed
    from kindler.db.sync.mirror import mirror

    Cluster.objects.using("postgres").all().delete()
    Cluster.objects.using("postgres").bulk_create(
        [Cluster(name=f"mirror-{i}", **ports(i)) for i in range(CLUSTERS)],
        batch_size=1000,
    )
    for start in range(0, OPERATIONS, 5000):
        OperationLog.objects.using("postgres").bulk_create(
            [
                OperationLog(
                    cluster_name=f"mirror-{i % CLUSTERS}",
                    operation="create",
                    status="success",
                    command="k3d cluster create",
                    log_output="INFO[0000] Creating cluster\n" * 4,
                )
                for i in range(start, start + 5000)
            ]
        )
    with journal_suppressed():
        Cluster.objects.using("sqlite").all().delete()
        OperationLog.objects.using("sqlite").all().delete()
    with connections["postgres"].cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    started = time.perf_counter()
    first = mirror(full=True)
    seconds = time.perf_counter() - started
    print(
        f"mirror, first run: {first.pulled:,} rows ({CLUSTERS:,} clusters + "
        f"{OPERATIONS:,} operations) in {seconds:.2f} s"
    )
    timings = []
    for _ in range(INCREMENTAL_RUNS):
        started = time.perf_counter()
        again = mirror()
        timings.append((time.perf_counter() - started) * 1000)
        assert (again.pulled, again.deleted, again.full) == (0, 0, False), again
    print(
        f"mirror, incremental, nothing changed: median {statistics.median(timings):.1f} ms, "
        f"best {min(timings):.1f} ms over {INCREMENTAL_RUNS} runs (target <= 50 ms)"
    )
    OperationLog.objects.using("postgres").filter(cluster_name="mirror-7").update(status="failed")
    started = time.perf_counter()
    changed = mirror()
    print(
        f"mirror, incremental, {changed.pulled} rows changed: "
        f"{(time.perf_counter() - started) * 1000:.1f} ms"
    )


def main() -> None:
    from bench._setup import configure_django, start_postgres

    server = start_postgres()
    try:
        # The background mirror stays off: the runs below are the ones timed.
        configure_django(server, KINDLER_MIRROR_INTERVAL="0")
        bench_replay()
        bench_mirror()
    finally:
        from django.db import connections

        connections.close_all()
        server.destroy()


if __name__ == "__main__":
    main()
