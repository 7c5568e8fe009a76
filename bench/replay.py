"""Time the journal replay and the mirror on a throwaway PostgreSQL.

    .venv/bin/python bench/replay.py

Replays a journal of 10,000 changes (target: at least 5,000 changes/s, and
within 5 s) while 4 threads create and read clusters on SQLite as requests do
during a recovery (printed: their p99, target 500 ms), then mirrors 5,000
clusters and 100,000 operations into an empty SQLite file (first run) and
again with nothing changed (target: at most 50 ms).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The script folder holds other benchmarks (bench/api.py) that would shadow
# the standard library: import from the project root instead.
sys.path[0] = str(ROOT)

CHANGES = 10_000
LOAD_THREADS = 4
# Host ports of the load's clusters come after the replayed ones' (see ports()).
LOAD_FIRST_INDEX, LOAD_PER_THREAD = 5_000, 2_500
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
    backend = postgres_backend()
    load = SqliteLoad(LOAD_THREADS)
    load.start()
    started = time.perf_counter()
    cpu, server_cpu = time.thread_time(), process_cpu(backend)
    try:
        report = replay()
    finally:
        seconds = time.perf_counter() - started
        cpu, server_cpu = time.thread_time() - cpu, process_cpu(backend) - server_cpu
        load.stop()
    print(
        f"replay: {journaled} changes in {seconds:.2f} s = {journaled / seconds:,.0f} changes/s "
        f"(pushed {report.pushed}, conflicts {report.conflicts}; target >= 5,000/s, "
        f"within 5 s with {LOAD_THREADS} load threads)"
    )
    # On a shared machine the time above depends on what else runs; the
    # processor time the replay took does much less.
    print(
        f"replay's processor time: {cpu:.2f} s in Kindler, {server_cpu:.2f} s in its "
        f"PostgreSQL backend; machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"work during the replay: {len(load.latencies)} operations from {LOAD_THREADS} threads "
        f"(a create, then a read, on SQLite as requests do while recovering), "
        f"p99 {load.p99() * 1000:.0f} ms, longest {max(load.latencies, default=0) * 1000:.0f} ms "
        "(target p99 <= 500 ms)"
    )


def postgres_backend() -> int:
    """Return the process id of the PostgreSQL backend this thread's connection uses."""
    from django.db import connections

    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def process_cpu(pid: int) -> float:
    """Return the processor seconds (user and system) process pid has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SqliteLoad:
    """Threads that create and read clusters on SQLite, as requests do while the instance recovers.

    Not HTTP requests: the database work of one, in this process, beside the replay.
    """

    def __init__(self, threads: int) -> None:
        self.threads = [
            threading.Thread(target=self._run, args=(index,), daemon=True)
            for index in range(threads)
        ]
        self.stopped = threading.Event()
        self.latencies: list[float] = []

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(len(ordered) * 0.99)] if ordered else 0.0

    def _run(self, index: int) -> None:
        from django.db import connections

        from clusters.models import Cluster
        from kindler.db.failover.pinning import pinned_alias
        from kindler.db.failover.writelock import write_transaction

        first = LOAD_FIRST_INDEX + index * LOAD_PER_THREAD
        try:
            with pinned_alias("sqlite"):
                for n in range(LOAD_PER_THREAD):
                    if self.stopped.is_set():
                        return
                    began = time.perf_counter()
                    # As the failover middleware runs a request's writes: in
                    # turn for SQLite's write lock, taken at the first write.
                    with write_transaction(connections["sqlite"], on_begin=lambda: None):
                        Cluster.objects.create(name=f"load-{index}-{n}", **ports(first + n))
                    Cluster.objects.filter(name=f"load-{index}-{n}").exists()
                    self.latencies.append(time.perf_counter() - began)
        finally:
            connections.close_all()


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
