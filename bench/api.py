"""Time Kindler's JSON API beside the original web UI backend, in one run.

Run as `.venv/bin/python bench/api.py`. (Named api.py, not http.py: a
module called http on sys.path would shadow the standard library's.)

It starts a throwaway PostgreSQL with fsync on (durable, as in production)
and serves, each on its own loopback port:

- Kindler on SQLite alone and Kindler on PostgreSQL, under granian with
  kindler.webserver's settings (2 workers x 4 threads), the API token and
  the failover middleware on, as deployed (a --before checkout from before
  kindler/webserver.py runs under gunicorn with its config/gunicorn.conf.py);
- the original backend (FastAPI on SQLite, no authentication) from
  ../shared/peer/kindler-original, when that folder is present, in its own
  virtual environment (bench/out/original/.venv, made from its
  requirements.txt on first use) under uvicorn with 2 worker processes; its
  host reconcile script is replaced by a no-op (bench/original_app.py);
- with --gunicorn, this checkout under gunicorn as well (`gunicorn
  kindler.wsgi`, gunicorn.conf.py: the same 2 workers x 4 threads);
- a bare Django view under granian with the same settings (bench/floor.py):
  the floor any Django answer pays.

Rounds are interleaved (every server gets a turn in each round, in a
rotating order) and one client does all the timing, so the ratios hold on a
busy machine even when the absolute figures drift. `--before DIR` adds
another Kindler checkout (for example `git archive e23e0e8 | tar -x -C DIR`)
to the same rounds.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import functools  # noqa: E402
import http.client  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import psycopg2  # noqa: E402

from bench._setup import kindler_environ  # noqa: E402
from tests.pgserver import PostgresServer, free_port  # noqa: E402

PYTHON = sys.executable
TOKEN = secrets.token_hex(16)
ORIGINAL_DIR = ROOT.parent / "shared" / "peer" / "kindler-original" / "webui" / "backend"
ORIGINAL_VENV = HERE / "out" / "original" / ".venv"
LIST_SIZE = 10
FIRST_PORT, LAST_PORT = 41000, 65000


class Client:
    """One keep-alive HTTP connection and a timer."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.headers = headers or {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, payload: Any = None) -> tuple[int, bytes, float]:
        """Send one JSON request; return status, body and milliseconds taken."""
        headers = {"Accept": "application/json", **self.headers}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, ConnectionError):
                # The server closed a kept-alive connection; reconnect once.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
                continue
            return response.status, data, (time.perf_counter() - started) * 1000
        raise AssertionError("unreachable")


@dataclass
class Server:
    """One backend under test: how to start it, call it and clean up after a round."""

    label: str
    kind: str  # kindler | original | floor
    command: list[str]
    env: dict[str, str]
    cwd: Path
    headers: dict[str, str] = field(default_factory=dict)
    cleanup: Callable[[], None] | None = None
    root: Path = ROOT
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def start(self) -> None:
        self.port = free_port()
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        env = {**self.env, "KINDLER_BIND": f"127.0.0.1:{self.port}"}
        self.process = subprocess.Popen(
            command, env=env, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        probe = "/floor" if self.kind == "floor" else "/api/health"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if self.client().call("GET", probe)[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.label} did not answer {probe}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def client(self) -> Client:
        return Client(self.port, self.headers)

    def worker_rss_mb(self) -> list[float]:
        """Return the resident memory of each worker process (the master's children)."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        sizes = []
        for child in children:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" in cmdline:
                continue
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        return sizes

    def add(self, key: str, values: list[float]) -> None:
        self.samples.setdefault(key, []).extend(values)


def names(prefix: str) -> Callable[[], tuple[str, dict[str, int]]]:
    """Return a source of fresh cluster names with host ports nobody else holds."""
    counter = itertools.count()
    lock = threading.Lock()

    def fresh() -> tuple[str, dict[str, int]]:
        with lock:
            index = next(counter)
        base = FIRST_PORT + (3 * index) % (LAST_PORT - FIRST_PORT)
        return f"{prefix}-{index}", {"http_port": base, "https_port": base + 1, "pf_port": base + 2}

    return fresh


def expect(status: int, wanted: int, body: bytes, what: str) -> None:
    if status != wanted:
        raise RuntimeError(f"{what}: expected {wanted}, got {status}: {body[:300]!r}")


def create_body(name: str, ports: dict[str, int]) -> dict[str, Any]:
    return {"name": name, "provider": "k3d", **ports}


def serial_round(server: Server, fresh: Callable[[], tuple[str, dict[str, int]]], n: int) -> None:
    """Time list, get, create, update and delete one request at a time."""
    client = server.client()
    if server.kind == "floor":
        server.add("floor", [client.call("GET", "/floor")[2] for _ in range(n)])
        return
    for _ in range(5):  # wake both workers' connections after the last round
        client.call("GET", "/api/clusters")
    lists = []
    for _ in range(n):
        status, body, ms = client.call("GET", "/api/clusters")
        expect(status, 200, body, "list")
        lists.append(ms)
    if len(json.loads(body)) != LIST_SIZE:
        raise RuntimeError(f"{server.label}: list returned {len(json.loads(body))} clusters")
    server.add("list", lists)
    gets = []
    for index in range(n):
        status, body, ms = client.call("GET", f"/api/clusters/list-{index % LIST_SIZE}")
        expect(status, 200, body, "get")
        gets.append(ms)
    server.add("get", gets)
    created = []
    made = []
    for _ in range(n):
        name, ports = fresh()
        status, body, ms = client.call("POST", "/api/clusters", create_body(name, ports))
        expect(status, 202, body, "create")
        created.append(ms)
        made.append(name)
    server.add("create", created)
    if server.kind == "kindler":
        updates = []
        for name in made:
            _, ports = fresh()
            status, body, ms = client.call("PATCH", f"/api/clusters/{name}", ports)
            expect(status, 200, body, "update")
            updates.append(ms)
        server.add("update", updates)
    deletes = []
    for name in made:
        status, body, ms = client.call("DELETE", f"/api/clusters/{name}")
        expect(status, 202, body, "delete")
        deletes.append(ms)
    server.add("delete", deletes)


def concurrent_round(
    server: Server,
    fresh: Callable[[], tuple[str, dict[str, int]]],
    concurrency: int,
    reads: int,
    writes: int,
) -> None:
    """Time GETs, then creates and deletes, from `concurrency` clients at once.

    The floor gets the GETs alone: the most a Django answer under the same
    web server settings can do on this machine.
    """

    def read(client: Client, index: int) -> list[float]:
        out = []
        for step in range(reads):
            path = (
                "/floor" if server.kind == "floor" else f"/api/clusters/list-{(index + step) % 10}"
            )
            status, body, ms = client.call("GET", path)
            expect(status, 200, body, "get")
            out.append(ms)
        return out

    def write(client: Client, index: int) -> list[float]:
        out = []
        for _ in range(writes):
            name, ports = fresh()
            status, body, ms = client.call("POST", "/api/clusters", create_body(name, ports))
            expect(status, 202, body, "create")
            out.append(ms)
            status, body, ms = client.call("DELETE", f"/api/clusters/{name}")
            expect(status, 202, body, "delete")
            out.append(ms)
        return out

    phases = (("read", read),) if server.kind == "floor" else (("read", read), ("write", write))
    for phase, work in phases:
        latencies, seconds = run_threads(server, concurrency, work)
        server.add(f"c{concurrency} {phase}", latencies)
        server.counts.setdefault(f"c{concurrency} {phase}", []).append((len(latencies), seconds))


def run_threads(
    server: Server, concurrency: int, work: Callable[[Client, int], list[float]]
) -> tuple[list[float], float]:
    clients = [server.client() for _ in range(concurrency)]
    for client in clients:  # connect outside the timed part
        client.call("GET", "/api/health")
    results: list[list[float]] = [[] for _ in clients]
    errors: list[BaseException] = []
    barrier = threading.Barrier(concurrency + 1)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(clients[index], index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{server.label}: {errors[0]}")
    return [ms for chunk in results for ms in chunk], seconds


def manage(root: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [PYTHON, str(root / "manage.py"), *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def seed_kindler(root: Path, env: dict[str, str], total: int) -> None:
    """Fill the inventory up to total clusters, outside the timed part."""
    code = (
        "from clusters.models import Cluster\n"
        "have = Cluster.objects.count()\n"
        f"Cluster.objects.bulk_create([Cluster(name=f'seed-{{i:05d}}', http_port=10000 + 3 * i, "
        f"https_port=10001 + 3 * i, pf_port=10002 + 3 * i) for i in range(have, {total})], "
        "batch_size=500)\n"
    )
    manage(root, env, "shell", "-c", code)


def sql_cleanup(connect: Callable[[], Any], table: str) -> Callable[[], None]:
    """Return a function that removes every cluster a round made (names not list-/seed-)."""

    def clean() -> None:
        conn = connect()
        try:
            conn.cursor().execute(
                f"DELETE FROM {table} WHERE name NOT LIKE 'list-%' AND name NOT LIKE 'seed-%'"
            )
            conn.commit()
        finally:
            conn.close()

    return clean


def kindler_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    # The journal triggers ask these; a benchmark's clean-up is not journaled.
    conn.create_function("kindler_journaling", 0, lambda: 0)
    conn.create_function("kindler_instance_primary", 0, lambda: 0)
    return conn


def original_python() -> Path | None:
    """Return the original backend's interpreter, making its venv on first use."""
    if not ORIGINAL_DIR.is_dir():
        return None
    python = ORIGINAL_VENV / "bin" / "python"
    if not python.exists():
        print("Making the original backend's virtual environment ...", file=sys.stderr)
        subprocess.run([PYTHON, "-m", "venv", str(ORIGINAL_VENV)], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "-r", ORIGINAL_DIR / "requirements.txt"],
            check=True,
        )
    return python


def kindler_servers(
    tag: str,
    root: Path,
    base: dict[str, str],
    data: Path,
    pg: PostgresServer,
    command: list[str] | None = None,
) -> list[Server]:
    """Return Kindler from root on SQLite alone and on PostgreSQL, migrated, with 10 clusters."""
    servers = []
    for db in ("SQLite", "PostgreSQL"):
        sqlite_path = data / f"{tag}-{db}.db"
        env = {**base, "SQLITE_PATH": str(sqlite_path)}
        if db == "PostgreSQL":
            database = f"kindler_{tag}"
            pg.create_database(database)
            env.update(
                PG_HOST=pg.host,
                PG_PORT=str(pg.port),
                PG_DATABASE=database,
                PG_USER=pg.user,
                PG_PASSWORD=pg.password,
            )

            connect = functools.partial(
                psycopg2.connect,
                host=pg.host,
                port=pg.port,
                dbname=database,
                user=pg.user,
                password=pg.password,
            )
        else:
            connect = functools.partial(kindler_sqlite, sqlite_path)
        manage(root, env, "migrate")
        server = Server(
            label=f"{tag} {db}",
            kind="kindler",
            command=command or web_server_command(root),
            env={**env, "KINDLER_WORKERS": "2"},
            cwd=root,
            headers={"Authorization": f"Bearer {TOKEN}"},
            cleanup=sql_cleanup(connect, "clusters_cluster"),
            root=root,
        )
        servers.append(server)
    return servers


def web_server_command(root: Path) -> list[str]:
    """Return how the checkout at root starts its web server (older ones ran gunicorn)."""
    if (root / "kindler" / "webserver.py").is_file():
        return [PYTHON, "-m", "kindler.webserver"]
    return [PYTHON, "-m", "gunicorn", "-c", str(root / "config" / "gunicorn.conf.py")]


def original_server(python: Path, data: Path) -> Server:
    db_path = data / "original.db"

    def connect() -> Any:
        return sqlite3.connect(db_path, timeout=30)

    scripts = data / "original-scripts"  # it refuses to start without its scripts folder
    scripts.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SCRIPTS_DIR": str(scripts),
        "DB_PATH": str(db_path),
        "CSV_PATH": str(data / "no-such.csv"),
        "PYTHONPATH": os.pathsep.join([str(ORIGINAL_DIR), str(HERE)]),
    }
    return Server(
        label="original",
        kind="original",
        command=[
            str(python),
            "-m",
            "uvicorn",
            "original_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--workers",
            "2",
        ],
        env=env,
        cwd=ORIGINAL_DIR,
        cleanup=sql_cleanup(connect, "clusters"),
    )


def floor_server(base: dict[str, str]) -> Server:
    """The bare view under granian with kindler.webserver's settings (2 workers x 4 threads)."""
    return Server(
        label="floor",
        kind="floor",
        command=[
            PYTHON,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--http",
            "1",
            "--no-ws",
            "--workers",
            "2",
            "--blocking-threads",
            "4",
            "--port",
            "{port}",
            "bench.floor:application",
        ],
        env={k: v for k, v in base.items() if k != "DJANGO_SETTINGS_MODULE"},
        cwd=ROOT,
    )


def driver_floor(pg: PostgresServer, data: Path, rounds: int = 300) -> dict[str, float]:
    """Return the median ms of one UPDATE + COMMIT through each driver, in process."""
    conn = sqlite3.connect(data / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, port INTEGER)")
    conn.execute("INSERT INTO t VALUES (1, 0)")
    timings = []
    for i in range(rounds):
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE t SET port = ? WHERE id = 1", (i,))
        conn.execute("COMMIT")
        timings.append((time.perf_counter() - started) * 1000)
    conn.close()
    sqlite_ms = statistics.median(timings)
    pg.create_database("kindler_floor")
    pconn = psycopg2.connect(
        host=pg.host, port=pg.port, dbname="kindler_floor", user=pg.user, password=pg.password
    )
    cursor = pconn.cursor()
    cursor.execute("CREATE TABLE t (id integer PRIMARY KEY, port integer)")
    cursor.execute("INSERT INTO t VALUES (1, 0)")
    pconn.commit()
    timings = []
    for i in range(rounds):
        started = time.perf_counter()
        cursor.execute("UPDATE t SET port = %s WHERE id = 1", (i,))
        pconn.commit()
        timings.append((time.perf_counter() - started) * 1000)
    pconn.close()
    return {"SQLite": sqlite_ms, "PostgreSQL": statistics.median(timings)}


def p(samples: list[float], percentile: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[percentile - 1]


def rate(server: Server, key: str) -> float:
    done = server.counts[key]
    return sum(n for n, _ in done) / sum(s for _, s in done)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def report(
    servers: dict[str, Server],
    drivers: dict[str, float],
    scaling: dict[str, tuple[float, float]],
    rss: dict[str, list[float]],
    args: argparse.Namespace,
) -> str:
    """Return the figures as Markdown tables: Kindler, the original, their ratio."""
    original = servers.get("original")
    floor = servers["floor"]
    floor_p50 = p(floor.samples["floor"], 50)
    lines = [
        f"{args.rounds} interleaved rounds; c=1: {args.requests} requests per operation per "
        f"round; c=8 and c=32: {args.reads} GETs and {args.writes} create+delete pairs per "
        "client per round. Kindler: granian, 2 workers x 4 threads, API token, failover "
        "middleware; PostgreSQL with fsync on. Original: uvicorn, 2 workers, SQLite, no "
        "authentication. Latencies in ms (p50 unless said); ratio = Kindler / original "
        "(below 1 is faster), and for req/s original / Kindler (below 1 is faster).",
        "",
    ]
    tags = [tag for tag in ("now", "before", "gunicorn") if f"{tag} SQLite" in servers]
    for tag in tags:
        sq, pgs = servers[f"{tag} SQLite"], servers[f"{tag} PostgreSQL"]
        title = {
            "now": "Kindler",
            "before": f"Kindler before ({args.before_label})",
            "gunicorn": "Kindler under gunicorn (gunicorn.conf.py, 2 workers x 4 threads)",
        }[tag]
        lines += [
            f"### {title}",
            "",
            "| figure | SQLite | original | ratio | PostgreSQL | ratio | PostgreSQL / SQLite |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, label in (
            ("list", "list 10, c=1"),
            ("get", "get, c=1"),
            ("create", "create, c=1"),
            ("delete", "delete, c=1"),
        ):
            s, g = p(sq.samples[key], 50), p(pgs.samples[key], 50)
            o = p(original.samples[key], 50) if original else None
            lines.append(
                f"| {label} | {fmt(s)} | {fmt(o)} | {ratio(s, o)} | {fmt(g)} | {ratio(g, o)} "
                f"| {ratio(g, s)} |"
            )
        s, g = p(sq.samples["update"], 50), p(pgs.samples["update"], 50)
        fs, fg = floor_p50 + drivers["SQLite"], floor_p50 + drivers["PostgreSQL"]
        lines.append(
            f"| update, c=1 (vs floor: bare view + driver UPDATE/COMMIT) | {fmt(s)} | "
            f"floor {fmt(fs)} | {ratio(s, fs)} | {fmt(g)} | floor {fmt(fg)} {ratio(g, fg)} "
            f"| {ratio(g, s)} |"
        )
        for c in (8, 32):
            for phase, what in (("read", "GET one"), ("write", "create+delete")):
                key = f"c{c} {phase}"
                s, g = rate(sq, key), rate(pgs, key)
                o = rate(original, key) if original else None
                lines.append(
                    f"| {what}, req/s at c={c} | {fmt(s, 0)} | {fmt(o, 0)} | {ratio(o, s)} "
                    f"| {fmt(g, 0)} | {ratio(o, g)} | {ratio(s, g)} |"
                )
            key = f"c{c} write"
            s, g = p(sq.samples[key], 99), p(pgs.samples[key], 99)
            o = p(original.samples[key], 99) if original else None
            lines.append(
                f"| write p99 at c={c} | {fmt(s)} | {fmt(o)} | {ratio(s, o)} | {fmt(g)} "
                f"| {ratio(g, o)} | {ratio(g, s)} |"
            )
        if tag in scaling:
            (s10, s10k), (g10, g10k) = scaling[tag], scaling[f"{tag} pg"]
            lines.append(
                f"| create at 10 / 10,000 clusters, c=1 | {fmt(s10)} / {fmt(s10k)} | - "
                f"| x{s10k / s10:.2f} | {fmt(g10)} / {fmt(g10k)} | x{g10k / g10:.2f} | - |"
            )
        s_rss, g_rss = rss[f"{tag} SQLite"], rss[f"{tag} PostgreSQL"]
        o_rss = statistics.mean(rss["original"]) if "original" in rss else None
        lines.append(
            f"| RSS per worker, MB | {fmt(max(s_rss), 1)} | {fmt(o_rss, 1)} "
            f"| {ratio(max(s_rss), o_rss)} | {fmt(max(g_rss), 1)} | {ratio(max(g_rss), o_rss)} "
            "| - |"
        )
        lines.append("")
    lines += [
        f"Floor: a bare Django view under the same granian settings {floor_p50:.2f} ms at c=1, "
        f"{rate(floor, 'c8 read'):,.0f} req/s at c=8 and {rate(floor, 'c32 read'):,.0f} at c=32; "
        f"UPDATE + COMMIT in process: sqlite3 (WAL, synchronous=FULL) "
        f"{drivers['SQLite'] * 1000:.0f} µs, psycopg2 (fsync on) "
        f"{drivers['PostgreSQL'] * 1000:.0f} µs.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40, help="c=1 requests per round")
    parser.add_argument("--reads", type=int, default=40, help="GETs per client per round")
    parser.add_argument("--writes", type=int, default=6, help="create+delete per client per round")
    parser.add_argument("--before", type=Path, help="another Kindler checkout to time as well")
    parser.add_argument(
        "--before-label", default="the --before checkout", help="what to call it (a commit)"
    )
    parser.add_argument(
        "--before-env",
        action="append",
        default=[],
        type=setting,
        metavar="NAME=VALUE",
        help="a setting for the --before servers only (again for more); with --before . "
        "it times one checkout under two settings, such as PG_POOL_MAX=0",
    )
    parser.add_argument("--no-original", action="store_true", help="skip the original backend")
    parser.add_argument(
        "--gunicorn", action="store_true", help="time this checkout under gunicorn as well"
    )
    parser.add_argument(
        "--pool-max",
        type=int,
        default=None,
        help="PG_POOL_MAX for the run (0: no pool, a persistent connection per thread)",
    )
    args = parser.parse_args()
    base = kindler_environ()
    base.update(
        DJANGO_SETTINGS_MODULE="kindler.settings",
        SECRET_KEY=secrets.token_hex(32),
        DEBUG="false",
        KINDLER_API_TOKEN=TOKEN,
        KINDLER_ACCESS_LOG="-",
        # Creating a cluster checks that its provider's CLI is installed; the
        # test fakes stand in (the reconciler, which would run them, is not started).
        PATH=os.pathsep.join([str(ROOT / "tests" / "fakes"), os.environ.get("PATH", "")]),
    )
    if args.pool_max is not None:
        base["PG_POOL_MAX"] = str(args.pool_max)
        base["PG_POOL_MIN"] = str(min(2, args.pool_max))
    pg = PostgresServer(durable=True)
    pg.init()
    pg.start()
    servers: dict[str, Server] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="kindler-bench-") as tmp:
            data = Path(tmp)
            for server in kindler_servers("now", ROOT, base, data, pg):
                servers[server.label] = server
            if args.before:
                before_base = {**base, **dict(args.before_env)}
                for server in kindler_servers(
                    "before", args.before.resolve(), before_base, data, pg
                ):
                    servers[server.label] = server
            if args.gunicorn:
                gunicorn = [PYTHON, "-m", "gunicorn", "kindler.wsgi"]
                for server in kindler_servers("gunicorn", ROOT, base, data, pg, gunicorn):
                    servers[server.label] = server
            python = None if args.no_original else original_python()
            if python is not None:
                servers["original"] = original_server(python, data)
            servers["floor"] = floor_server(base)
            drivers = driver_floor(pg, data)
            for server in servers.values():
                print(f"Starting {server.label} ...", file=sys.stderr)
                server.start()
                if server.kind != "floor":
                    client = server.client()
                    for index in range(LIST_SIZE):
                        ports = {"http_port": 40100 + 3 * index}
                        ports |= {"https_port": 40101 + 3 * index, "pf_port": 40102 + 3 * index}
                        status, body, _ = client.call(
                            "POST", "/api/clusters", create_body(f"list-{index}", ports)
                        )
                        expect(status, 202, body, "seed")
            order = list(servers.values())
            fresh = {label: names(f"b{n}") for n, label in enumerate(servers)}
            for round_ in range(args.rounds):
                print(f"Round {round_ + 1} of {args.rounds} ...", file=sys.stderr)
                shift = round_ % len(order)
                for server in order[shift:] + order[:shift]:
                    serial_round(server, fresh[server.label], args.requests)
                    for concurrency, reads in ((8, args.reads), (32, max(1, args.reads // 4))):
                        writes = args.writes if concurrency == 8 else max(1, args.writes // 4)
                        concurrent_round(server, fresh[server.label], concurrency, reads, writes)
                    if server.cleanup is not None:
                        server.cleanup()
            rss = {label: s.worker_rss_mb() for label, s in servers.items() if s.kind != "floor"}
            scaling = create_scaling(servers, args.requests)
            print(report(servers, drivers, scaling, rss, args))
    finally:
        for server in servers.values():
            server.stop()
        pg.destroy()


def setting(text: str) -> tuple[str, str]:
    """Parse NAME=VALUE (an environment variable) for --before-env."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def create_scaling(servers: dict[str, Server], n: int) -> dict[str, tuple[float, float]]:
    """Return each Kindler's create p50 at 10 and at 10,000 clusters."""
    result: dict[str, tuple[float, float]] = {}
    for tag in ("now", "before"):
        for db, key in (("SQLite", tag), ("PostgreSQL", f"{tag} pg")):
            server = servers.get(f"{tag} {db}")
            if server is None:
                continue
            fresh = names(f"s{tag}{db[0].lower()}")
            small = time_creates(server, fresh, n)
            if server.cleanup is not None:
                server.cleanup()
            seed_kindler(server.root, server.env, 10_000)
            large = time_creates(server, fresh, n)
            result[key] = (small, large)
    return result


def time_creates(server: Server, fresh: Callable[[], tuple[str, dict[str, int]]], n: int) -> float:
    client = server.client()
    timings = []
    for _ in range(n * 2):
        name, ports = fresh()
        status, body, ms = client.call("POST", "/api/clusters", create_body(name, ports))
        expect(status, 202, body, "create")
        timings.append(ms)
    return p(timings[n // 2 :], 50)


if __name__ == "__main__":
    main()
