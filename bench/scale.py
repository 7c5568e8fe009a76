"""Time Kindler at 10, 1,000, 10,000 and 100,000 clusters, on SQLite alone and on PostgreSQL.

Run as `.venv/bin/python bench/scale.py` (`--sizes 10,1000` for a shorter run).

It starts a throwaway PostgreSQL with fsync on and two Kindler instances
under granian with kindler.webserver's defaults (2 workers x 4 threads):
one on SQLite alone, one on PostgreSQL (its background mirror off, so the
passes timed here are the only ones). At each size it first fills both
databases in bulk, outside the servers (COPY on PostgreSQL, executemany on
SQLite, the tables' triggers firing as for any writer): the clusters, ten
operations each (1,000,000 at 100,000 clusters) and one cluster, `scale-big`,
with 10,000 operations. Then it prints, for each instance:

- GET /api/clusters?limit=100 (p50), and the whole list: its time, its size
  and the largest worker's resident memory after it;
- the dashboard's first page, scale-big's page and the System page, signed
  in (p50);
- a create through the API (p50);
- `manage.py dbstatus`, timed inside the command and as a whole process;
- on PostgreSQL, the mirror: the pass that copies what the bulk load added
  into SQLite, then an incremental pass with nothing changed and one after
  a single change;
- the resident memory of each web worker at the end of the size.

The scale clusters live on Docker hosts of their own (scale-0, scale-1, ...),
20,000 to a host: a host has ports for about 21,000 clusters.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The script folder holds other benchmarks (bench/api.py) that would shadow
# the standard library: import from the project root instead.
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

SIZES = (10, 1_000, 10_000, 100_000)
OPERATIONS_PER_CLUSTER = 10
BIG = "scale-big"
BIG_OPERATIONS = 10_000
PER_HOST = 20_000
PYTHON = sys.executable
ADMIN, PASSWORD = "bench", "bench-password-" + secrets.token_hex(8)


def load(clusters: int) -> str:
    """Fill this instance's database up to clusters (and their operations); return what it did.

    Runs inside `manage.py shell`, with the instance's settings.
    """
    from django.db import connections

    from clusters.models import Cluster, OperationLog
    from kindler.db import POSTGRES, SQLITE
    from kindler.db.failover.pinning import postgres_configured

    alias = POSTGRES if postgres_configured() else SQLITE
    scale = Cluster.objects.using(alias).filter(name__startswith="scale-")
    have = scale.exclude(name=BIG).count()
    started = time.perf_counter()
    connection = connections[alias]
    new_clusters = [cluster_row(index, connection) for index in range(have, clusters)]
    history = operation_rows(connection)
    operations = []
    if not scale.filter(name=BIG).exists():
        new_clusters.append(cluster_row(None, connection))
        operations += [history(BIG, step) for step in range(BIG_OPERATIONS)]
    for index in range(have, clusters):
        name = f"scale-{index:06d}"
        operations += [history(name, step) for step in range(OPERATIONS_PER_CLUSTER)]
    insert(connection, Cluster, new_clusters)
    insert(connection, OperationLog, operations)
    if connection.vendor == "postgresql":
        # As autovacuum soon would: fresh statistics and a visibility map, so
        # counts can be answered from an index alone.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE clusters_cluster, clusters_operationlog")
    seconds = time.perf_counter() - started
    return f"{len(new_clusters):,} clusters and {len(operations):,} operations in {seconds:.1f} s"


def cluster_row(index: int | None, connection: Any) -> tuple[Any, ...]:
    from clusters.models import Cluster

    if index is None:
        cluster = Cluster(name=BIG, host="scale-big", actual_state="running")
    else:
        slot = index % PER_HOST
        cluster = Cluster(
            name=f"scale-{index:06d}",
            host=f"scale-{index // PER_HOST}",
            http_port=1100 + 3 * slot,
            https_port=1101 + 3 * slot,
            pf_port=1102 + 3 * slot,
            actual_state=("running", "stopped", "failed")[index % 3],
        )
    return prepared(cluster, connection)


def operation_rows(connection: Any) -> Any:
    """Return a function that makes one operation's row: a template, with its own uid and name."""
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from clusters.models import OperationLog

    fields = columns(OperationLog)
    attnames = [field.attname for field in fields]
    uid, name = attnames.index("uid"), attnames.index("cluster_name")
    created = attnames.index("created_at")
    prep_uid, prep_created = fields[uid].get_db_prep_save, fields[created].get_db_prep_save
    now = timezone.now()
    templates = [
        list(
            prepared(
                OperationLog(
                    cluster_name="template",
                    operation=operation,
                    status="success",
                    command="k3d cluster create",
                    log_output="INFO[0000] Prep: Network\nINFO[0001] Created network\n" * 3,
                    exit_code=0,
                ),
                connection,
            )
        )
        for operation in ("create", "stop", "start")
    ]

    def row(cluster: str, step: int) -> tuple[Any, ...]:
        values = templates[step % 3][:]
        values[uid] = prep_uid(uuid.uuid4(), connection)
        values[name] = cluster
        # A minute apart, as a history that grew over time.
        values[created] = prep_created(now - timedelta(minutes=step), connection)
        return tuple(values)

    return row


def prepared(obj: Any, connection: Any) -> tuple[Any, ...]:
    """Return obj's column values as the database stores them (auto fields filled in)."""
    return tuple(
        field.get_db_prep_save(field.pre_save(obj, True), connection)
        for field in columns(type(obj))
    )


def columns(model: Any) -> list[Any]:
    return [field for field in model._meta.concrete_fields if not field.primary_key]


def insert(connection: Any, model: Any, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows in one transaction: COPY on PostgreSQL, executemany on SQLite."""
    import io

    import psycopg2.extensions
    from django.db import transaction

    names = [field.column for field in columns(model)]
    table = model._meta.db_table
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY cannot run under the wait callback Kindler installs (it
            # keeps a slow statement interruptible); this process only loads,
            # for longer than any request may take.
            psycopg2.extensions.set_wait_callback(None)
            cursor.execute("SET LOCAL statement_timeout = 0")
            for start in range(0, len(rows), 100_000):
                buffer = io.StringIO()
                for row in rows[start : start + 100_000]:
                    buffer.write("\t".join(copy_text(value) for value in row) + "\n")
                buffer.seek(0)
                cursor.cursor.copy_expert(
                    f"COPY {table} ({', '.join(names)}) FROM STDIN", buffer, size=1 << 20
                )
        else:
            # The uid index takes rows in random order: with SQLite's default
            # 2 MB page cache that is a disk read per row.
            cursor.execute("PRAGMA cache_size = -262144")
            marks = ", ".join(["%s"] * len(names))
            cursor.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", rows)


def copy_text(value: Any) -> str:
    """Return value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def session_cookie() -> str:
    """Print `name=value` of a signed-in session cookie for the bench admin (in manage.py shell)."""
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.get(username=ADMIN))
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def time_dbstatus() -> str:
    """Return how long dbstatus took inside the process, in ms (in manage.py shell)."""
    from io import StringIO

    from django.core.management import call_command

    started = time.perf_counter()
    call_command("dbstatus", stdout=StringIO())
    return f"{(time.perf_counter() - started) * 1000:.0f}"


def time_mirror() -> str:
    """Return JSON timings of three mirror passes (in manage.py shell)."""
    from django.db import connections

    from kindler.db.sync.mirror import mirror

    timings = {}
    for label in ("catch-up", "nothing changed"):
        started = time.perf_counter()
        report = mirror()
        timings[label] = ((time.perf_counter() - started) * 1000, report.pulled)
    # As another writer would (psql, another instance): not through this
    # process's write-through copy.
    with connections["postgres"].cursor() as cursor:
        cursor.execute(
            "UPDATE clusters_operationlog SET status = 'failed' WHERE id = "
            "(SELECT min(id) FROM clusters_operationlog WHERE cluster_name = %s)",
            [BIG],
        )
    started = time.perf_counter()
    report = mirror()
    timings["one change"] = ((time.perf_counter() - started) * 1000, report.pulled)
    return json.dumps(timings)


def shell(instance: Instance, code: str) -> str:
    """Run code in `manage.py shell` with the instance's settings; return its last line."""
    from bench.api import manage

    return manage(ROOT, instance.env, "shell", "-c", code).strip().splitlines()[-1]


class Instance:
    """One Kindler: its settings, its web server, and a signed-in session."""

    def __init__(self, label: str, env: dict[str, str]) -> None:
        from bench.api import TOKEN, Server

        self.label, self.env = label, env
        self.server = Server(
            label=label,
            kind="kindler",
            command=[PYTHON, "-m", "kindler.webserver"],
            env=env,
            cwd=ROOT,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        self.cookie = ""
        self.created = 0

    def prepare(self) -> None:
        from bench.api import manage

        manage(ROOT, self.env, "migrate")
        manage(ROOT, self.env, "ensure_admin")
        self.cookie = shell(self, "from bench.scale import session_cookie; print(session_cookie())")

    def page_client(self) -> Any:
        from bench.api import Client

        return Client(self.server.port, {"Cookie": self.cookie})


def p50(call: Any, times: int) -> float:
    """Return the median of times calls, after a few untimed ones that warm both workers up."""
    for _ in range(4):
        call()
    timings = []
    for _ in range(times):
        status, body, ms = call()
        if status != 200:
            raise RuntimeError(f"answered {status}: {body[:300]!r}")
        timings.append(ms)
    return statistics.median(timings)


def measure(instance: Instance, size: int) -> dict[str, Any]:
    """Return every figure of one instance at one size."""
    from bench.api import create_body, expect

    server = instance.server
    api, pages = server.client(), instance.page_client()
    figures: dict[str, Any] = {}
    figures["list 100"] = p50(lambda: api.call("GET", "/api/clusters?limit=100"), 20)
    # Twice: the first also warms the worker up; the better time is kept.
    times = []
    for _ in range(2):
        started = time.perf_counter()
        status, body, _ = api.call("GET", "/api/clusters")
        times.append((time.perf_counter() - started) * 1000)
        expect(status, 200, body, "full list")
    figures["full list"] = min(times)
    figures["full list MB"] = len(body) / 1e6
    figures["full list count"] = len(json.loads(body))
    del body
    figures["RSS after list"] = max(server.worker_rss_mb())
    figures["dashboard"] = p50(lambda: pages.call("GET", "/"), 10)
    figures["cluster page"] = p50(lambda: pages.call("GET", f"/clusters/{BIG}/"), 10)
    figures["system page"] = p50(lambda: pages.call("GET", "/system/"), 5)
    creates = []
    for _ in range(20):
        index = instance.created
        instance.created += 1
        ports = {"http_port": 20000 + 3 * index, "https_port": 20001 + 3 * index}
        ports["pf_port"] = 20002 + 3 * index
        status, body, ms = api.call(
            "POST", "/api/clusters", create_body(f"bench-create-{index}", ports)
        )
        expect(status, 202, body, "create")
        creates.append(ms)
    figures["create"] = statistics.median(creates[5:])
    started = time.perf_counter()
    inside = shell(instance, "from bench.scale import time_dbstatus; print(time_dbstatus())")
    figures["dbstatus"] = (float(inside), (time.perf_counter() - started) * 1000)
    if "PG_HOST" in instance.env:
        figures["mirror"] = json.loads(
            shell(instance, "from bench.scale import time_mirror; print(time_mirror())")
        )
    figures["RSS"] = server.worker_rss_mb()
    return figures


def report(results: dict[str, dict[int, dict[str, Any]]], loads: list[str]) -> str:
    sizes = sorted({size for by_size in results.values() for size in by_size})
    lines = [
        "| figure | "
        + " | ".join(f"{label} {size:,}" for label in results for size in sizes)
        + " |",
        "|---|" + "---|" * (len(results) * len(sizes)),
    ]

    def row(title: str, cell: Any) -> None:
        values = []
        for by_size in results.values():
            for size in sizes:
                figures = by_size.get(size)
                values.append("-" if figures is None else cell(figures))
        lines.append(f"| {title} | " + " | ".join(values) + " |")

    row("GET /api/clusters?limit=100, ms", lambda f: f"{f['list 100']:.1f}")
    row("GET /api/clusters (all), ms", lambda f: f"{f['full list']:,.0f}")
    row("  its size, MB", lambda f: f"{f['full list MB']:.1f}")
    row("  largest worker after it, MB", lambda f: f"{f['RSS after list']:.0f}")
    row("dashboard first page, ms", lambda f: f"{f['dashboard']:.1f}")
    row(f"{BIG}'s page ({BIG_OPERATIONS:,} operations), ms", lambda f: f"{f['cluster page']:.1f}")
    row("System page, ms", lambda f: f"{f['system page']:.1f}")
    row("create (POST /api/clusters), ms", lambda f: f"{f['create']:.1f}")
    row(
        "dbstatus, in the command / whole process, ms",
        lambda f: "{:.0f} / {:.0f}".format(*f["dbstatus"]),
    )
    row(
        "mirror: catch-up after the load, ms (rows)",
        lambda f: "{:,.0f} ({:,})".format(*f["mirror"]["catch-up"]) if "mirror" in f else "-",
    )
    row(
        "mirror: incremental, nothing changed, ms",
        lambda f: f"{f['mirror']['nothing changed'][0]:.1f}" if "mirror" in f else "-",
    )
    row(
        "mirror: incremental, one change, ms",
        lambda f: f"{f['mirror']['one change'][0]:.1f}" if "mirror" in f else "-",
    )
    row("RSS per worker at the end, MB", lambda f: " / ".join(f"{mb:.0f}" for mb in f["RSS"]))
    return "\n".join([*lines, "", "Loads:", *(f"- {line}" for line in loads)])


def main() -> None:
    from bench._setup import kindler_environ, start_postgres
    from bench.api import TOKEN

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(size) for size in SIZES))
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    pg = start_postgres(durable=True)
    instances: list[Instance] = []
    results: dict[str, dict[int, dict[str, Any]]] = {}
    loads: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="kindler-scale-") as tmp:
            base = kindler_environ(
                DJANGO_SETTINGS_MODULE="kindler.settings",
                SECRET_KEY=secrets.token_hex(32),
                DEBUG="false",
                KINDLER_API_TOKEN=TOKEN,
                KINDLER_ACCESS_LOG="off",
                KINDLER_ADMIN_USER=ADMIN,
                KINDLER_ADMIN_PASSWORD=PASSWORD,
                KINDLER_MIRROR_INTERVAL="0",
                PATH=os.pathsep.join([str(ROOT / "tests" / "fakes"), os.environ["PATH"]]),
            )
            postgres = {
                "PG_HOST": pg.host,
                "PG_PORT": str(pg.port),
                "PG_DATABASE": "kindler",
                "PG_USER": pg.user,
                "PG_PASSWORD": pg.password,
            }
            for label, extra in (("SQLite", {}), ("PostgreSQL", postgres)):
                env = {**base, **extra, "SQLITE_PATH": f"{tmp}/{label}.db"}
                instance = Instance(label, env)
                instance.prepare()
                instances.append(instance)
                results[label] = {}
            for size in sizes:
                for instance in instances:
                    print(f"{instance.label}: loading up to {size:,} clusters ...", file=sys.stderr)
                    done = shell(instance, f"from bench.scale import load; print(load({size}))")
                    loads.append(f"{instance.label}, up to {size:,}: {done}")
                    print(f"  {done}", file=sys.stderr)
                    instance.server.start()
                    try:
                        results[instance.label][size] = measure(instance, size)
                    finally:
                        instance.server.stop()
                    print(f"  {results[instance.label][size]}", file=sys.stderr)
            load_average = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(report(results, loads))
            print(f"\nLoad average at the end (1, 5, 15 min): {load_average}")
    finally:
        for instance in instances:
            instance.server.stop()
        pg.destroy()


if __name__ == "__main__":
    main()
