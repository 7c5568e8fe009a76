"""Time Kindler's API and dashboard under gunicorn on PostgreSQL and on SQLite.

Run as `.venv/bin/python bench/api.py`. It starts a throwaway PostgreSQL
(tests/pgserver.py) and, for each database, gunicorn with 2 workers on a
free loopback port, then prints p50/p95 latencies beside the figures the
original Kindler web UI published. Request counts are fixed, so a run takes
about a minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from collections.abc import Callable  # noqa: E402
from http.cookies import SimpleCookie  # noqa: E402
from typing import Any  # noqa: E402

from tests.pgserver import PostgresServer, free_port  # noqa: E402

PYTHON = sys.executable
ADMIN_USER, ADMIN_PASSWORD = "bench", "bench-" + secrets.token_hex(8)
TOKEN = secrets.token_hex(16)
# The original web UI's published figures (ms) for list/insert/update/delete.
ORIGINAL = {
    "PostgreSQL": {"list": 15, "insert": 20, "update": 18, "delete": 17},
    "SQLite": {"list": 5, "insert": 10, "update": 8, "delete": 7},
}
TARGET_P50 = {"PostgreSQL": 3.0, "SQLite": 2.0, "dashboard": 25.0}


class Client:
    """One keep-alive HTTP connection with a cookie jar and a timer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, float]:
        """Send one request; return status, body and milliseconds taken."""
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, ConnectionError):
                # The worker closed a kept-alive connection; reconnect once.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
                continue
            elapsed = (time.perf_counter() - started) * 1000
            for header in response.headers.get_all("Set-Cookie") or []:
                for key, morsel in SimpleCookie(header).items():
                    self.cookies[key] = morsel.value
            return response.status, data, elapsed
        raise AssertionError("unreachable")

    def api(self, method: str, path: str, payload: Any = None) -> tuple[int, Any, float]:
        """Call the JSON API with the bearer token."""
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        status, data, elapsed = self.request(method, path, body, headers)
        return status, json.loads(data) if data else None, elapsed

    def log_in(self) -> None:
        """Log in through the login form, as a browser does."""
        status, page, _ = self.request("GET", "/accounts/login/")
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if status != 200 or match is None:
            raise RuntimeError(f"login page answered {status}")
        form = urllib.parse.urlencode(
            {
                "username": ADMIN_USER,
                "password": ADMIN_PASSWORD,
                "csrfmiddlewaretoken": match.group(1).decode(),
            }
        ).encode()
        status, _, _ = self.request(
            "POST",
            "/accounts/login/",
            form,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        if status != 302:
            raise RuntimeError(f"login answered {status}, expected 302")


def timed(count: int, step: Callable[[int], tuple[int, Any, float]], expect: int) -> list[float]:
    """Run step(i) count times; return the latencies, failing on a wrong status."""
    samples = []
    for index in range(count):
        status, body, elapsed = step(index)
        if status != expect:
            raise RuntimeError(f"expected {expect}, got {status}: {str(body)[:200]}")
        samples.append(elapsed)
    return samples


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def seed(env: dict[str, str], total: int) -> None:
    """Fill the inventory up to total clusters, quickly, outside the timed part."""
    code = (
        "from clusters.models import Cluster\n"
        f"missing = {total} - Cluster.objects.count()\n"
        "Cluster.objects.bulk_create([Cluster(name=f'seed-{i:05d}', http_port=20000 + 3 * i, "
        "https_port=20001 + 3 * i, pf_port=20002 + 3 * i) for i in range(max(0, missing))], "
        "batch_size=500)\n"
    )
    manage(env, "shell", "-c", code)


def start_gunicorn(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.conf.py")],
        env={**env, "KINDLER_BIND": f"127.0.0.1:{port}", "KINDLER_WORKERS": "2"},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status, _, _ = Client(port).request("GET", "/api/health")
            if status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("gunicorn did not answer /api/health within 30 s")


def run_backend(env: dict[str, str], requests: int, pages: int) -> dict[str, list[float]]:
    """Migrate, start gunicorn, and time every operation on one database."""
    manage(env, "migrate")
    manage(env, "ensure_admin")
    port = free_port()
    server = start_gunicorn(env, port)
    try:
        client = Client(port)
        for index in range(10):
            client.api("POST", "/api/clusters", {"name": f"list-{index}", **ports(900 + index)})
        for _ in range(20):  # warm both workers' connections and caches
            client.api("GET", "/api/clusters")
        results = {
            "list": timed(requests, lambda i: client.api("GET", "/api/clusters"), 200),
            "insert": timed(
                requests,
                lambda i: client.api("POST", "/api/clusters", {"name": f"b-{i}", **ports(i)}),
                202,
            ),
            "update": timed(
                requests,
                lambda i: client.api("PATCH", f"/api/clusters/b-{i}", ports(i + 1000)),
                200,
            ),
            "delete": timed(requests, lambda i: client.api("DELETE", f"/api/clusters/b-{i}"), 202),
        }
        seed(env, 5000)
        client.log_in()
        client.request("GET", "/")
        results["dashboard"] = timed(pages, lambda i: client.request("GET", "/"), 200)
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)


def ports(index: int) -> dict[str, int]:
    """Return host ports no seeded or other benchmark cluster uses."""
    base = 40000 + 3 * index
    return {"http_port": base, "https_port": base + 1, "pf_port": base + 2}


def p(samples: list[float], percentile: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[percentile - 1]


def report(results: dict[str, dict[str, list[float]]], requests: int, pages: int) -> str:
    """Return the results as a plain table beside the original's figures."""
    labels = {
        "list": "list 10 clusters (API)",
        "insert": "insert (POST)",
        "update": "update (PATCH)",
        "delete": "delete (DELETE)",
        "dashboard": "dashboard, 5,000 clusters",
    }
    header = f"{'operation':<27}" + "".join(
        f"{backend + ' p50':>16}{'p95':>8}{'original':>10}" for backend in results
    )
    lines = [
        f"Kindler over HTTP: gunicorn, 2 workers, loopback; {requests} API requests and "
        f"{pages} page loads per row; milliseconds",
        header,
        "-" * len(header),
    ]
    for key, label in labels.items():
        row = f"{label:<27}"
        for backend, timings in results.items():
            original = ORIGINAL[backend].get(key)
            row += f"{p(timings[key], 50):>16.2f}{p(timings[key], 95):>8.2f}"
            row += f"{original if original is not None else '-':>10}"
        lines.append(row)
    lines.append(
        "Targets (p50): PostgreSQL <= 3 ms, SQLite <= 2 ms for the API; dashboard <= 25 ms."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="API requests per row")
    parser.add_argument("--pages", type=int, default=50, help="dashboard page loads")
    parser.add_argument(
        "--pool-max",
        type=int,
        default=None,
        help="PG_POOL_MAX for the run (0: no pool, a persistent connection per thread)",
    )
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG_", "KINDLER_"))}
    base.update(
        DJANGO_SETTINGS_MODULE="kindler.settings",
        SECRET_KEY=secrets.token_hex(32),
        DEBUG="false",
        KINDLER_API_TOKEN=TOKEN,
        KINDLER_ADMIN_USER=ADMIN_USER,
        KINDLER_ADMIN_PASSWORD=ADMIN_PASSWORD,
        KINDLER_ACCESS_LOG="-",
        # Creating a cluster checks that its provider's CLI is installed; the
        # test fakes stand in (the reconciler, which would run them, is not started).
        PATH=os.pathsep.join([str(ROOT / "tests" / "fakes"), os.environ.get("PATH", "")]),
    )
    if args.pool_max is not None:
        base["PG_POOL_MAX"] = str(args.pool_max)
        base["PG_POOL_MIN"] = str(min(2, args.pool_max))
    server = PostgresServer()
    server.init()
    server.start()
    results: dict[str, dict[str, list[float]]] = {}
    try:
        server.create_database("kindler_bench")
        with tempfile.TemporaryDirectory(prefix="kindler-bench-") as data:
            postgres = {
                **base,
                "SQLITE_PATH": f"{data}/pg-run.db",
                "PG_HOST": server.host,
                "PG_PORT": str(server.port),
                "PG_DATABASE": "kindler_bench",
                "PG_USER": server.user,
                "PG_PASSWORD": server.password,
            }
            print("Timing PostgreSQL ...", file=sys.stderr)
            results["PostgreSQL"] = run_backend(postgres, args.requests, args.pages)
            print("Timing SQLite ...", file=sys.stderr)
            sqlite = {**base, "SQLITE_PATH": f"{data}/sqlite-run.db"}
            results["SQLite"] = run_backend(sqlite, args.requests, args.pages)
    finally:
        server.destroy()
    print(report(results, args.requests, args.pages))


if __name__ == "__main__":
    main()
