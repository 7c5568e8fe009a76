"""Time adopting a SQLite file into a new PostgreSQL database.

    .venv/bin/python bench/adopt.py

Fills the SQLite file with 5,000 clusters and 100,000 operation logs (as
an embedded Kindler would have them), then meets a new, empty PostgreSQL:
reconcile_identity() carries every row into it (target: at most 10 s).
Then times the check alone on an unchanged database (what every recovery
and every mirror run pays).
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

CLUSTERS = 5_000
OPERATIONS = 100_000
CHECKS = 20


def fill_sqlite() -> None:
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User

    from clusters.models import Cluster, OperationLog
    from kindler.db.sync.journal import journal_suppressed

    with journal_suppressed():
        Cluster.objects.using("sqlite").bulk_create(
            [
                Cluster(
                    name=f"adopt-{i}",
                    http_port=10000 + i,
                    https_port=16000 + i,
                    pf_port=22000 + i,
                )
                for i in range(CLUSTERS)
            ],
            batch_size=500,
        )
        for start in range(0, OPERATIONS, 5000):
            OperationLog.objects.using("sqlite").bulk_create(
                [
                    OperationLog(
                        cluster_name=f"adopt-{i % CLUSTERS}",
                        operation="create",
                        status="success",
                        command="k3d cluster create",
                        log_output="INFO[0000] Creating cluster\n" * 4,
                    )
                    for i in range(start, start + 5000)
                ],
                batch_size=500,
            )
        User.objects.using("sqlite").bulk_create(
            [User(username="admin", password=make_password("bench"), is_superuser=True)]
        )


def bench_adopt() -> None:
    from clusters.models import Cluster, OperationLog
    from kindler.db.models import RestoredRow
    from kindler.db.sync.adopt import reconcile_identity

    started = time.perf_counter()
    report = reconcile_identity()
    seconds = time.perf_counter() - started
    clusters = Cluster.objects.using("postgres").count()
    operations = OperationLog.objects.using("postgres").count()
    restored = RestoredRow.objects.using("postgres").count()
    assert (clusters, operations) == (CLUSTERS, OPERATIONS), (clusters, operations)
    print(
        f"adopt: {clusters:,} clusters + {operations:,} operations into a new PostgreSQL "
        f"in {seconds:.2f} s ({report.why}; {restored:,} restored rows listed, "
        f"{len(report.restored):,} reported; target <= 10 s)"
    )
    timings = []
    for _ in range(CHECKS):
        started = time.perf_counter()
        again = reconcile_identity()
        timings.append((time.perf_counter() - started) * 1000)
        assert again.why is None, again
    print(
        f"identity check, unchanged: median {statistics.median(timings):.2f} ms, "
        f"best {min(timings):.2f} ms over {CHECKS} runs"
    )


def main() -> None:
    import logging

    from bench._setup import configure_django, start_postgres

    server = start_postgres()
    try:
        # The background mirror stays off: the run below is the one timed.
        configure_django(server, KINDLER_MIRROR_INTERVAL="0")
        # Adoption names the first rows it writes back; keep the figure readable.
        logging.getLogger("kindler.db").setLevel(logging.ERROR)
        fill_sqlite()
        bench_adopt()
    finally:
        from django.db import connections

        connections.close_all()
        server.destroy()


if __name__ == "__main__":
    main()
