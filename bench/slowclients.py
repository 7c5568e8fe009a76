"""Slow clients: what other requests wait while connections dribble their headers and bodies.

Starts Kindler under kindler.webserver (2 workers x 4 threads) on a fresh
SQLite file, times GET /api/health (anonymous) and GET /api/clusters/<name>
(API token), one at a time, first with nothing else open, then with 64
connections that announce a 100,000-byte body and send one byte, and 64 that
send half a request line and stop. Then it waits for the server to drop the
slow bodies (KINDLER_BODY_TIMEOUT) and counts the 408 answers.

    .venv/bin/python bench/slowclients.py
    .venv/bin/python bench/slowclients.py --slow 128 --requests 400
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.services import Kindler  # noqa: E402

TOKEN = "bench-slow-clients-token-0123456789abcdef"
SLOW_BODY = (
    b"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\na"
)
SLOW_HEADER = b"GET /api/health HTTP/1.1\r\nHost: 127"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed_get(port: int, path: str, token: str | None) -> float:
    """Return the seconds one GET on a new connection took, or inf when it was not answered."""
    started = time.perf_counter()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request.encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        return float("inf")
    return time.perf_counter() - started if answer.startswith(b"HTTP/1.1 200") else float("inf")


def percentiles(seconds: list[float]) -> tuple[str, str, str]:
    """Return p50, p99 and max in milliseconds, as text ("-" for an unanswered request)."""
    ordered = sorted(seconds)

    def at(fraction: float) -> str:
        value = ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]
        return "-" if value == float("inf") else f"{value * 1000:.1f}"

    return at(0.5), at(0.99), at(1.0)


def rounds(port: int, requests: int) -> dict[str, list[float]]:
    """Time requests GETs of each kind, alternating."""
    times: dict[str, list[float]] = {"health": [], "cluster": []}
    for _ in range(requests):
        times["health"].append(timed_get(port, "/api/health", None))
        times["cluster"].append(timed_get(port, "/api/clusters/bench-slow", TOKEN))
    return times


def open_slow(port: int, count: int, opening: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(opening)
        sockets.append(sock)
    return sockets


def answer_of(sock: socket.socket) -> bytes:
    """Return what the server sent on sock before closing it (b"" for nothing)."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=64, help="slow-body and slow-header sockets")
    parser.add_argument("--requests", type=int, default=200, help="GETs of each kind per phase")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="kindler-bench-slow-"))
    port = free_port()
    env = {
        **os.environ,
        "SQLITE_PATH": str(data / "kindler.db"),
        "SECRET_KEY": "bench-" + os.urandom(8).hex(),
        "KINDLER_API_TOKEN": TOKEN,
        "KINDLER_BIND": f"127.0.0.1:{port}",
        "KINDLER_WORKERS": "2",
        "KINDLER_THREADS": "4",
        "KINDLER_ACCESS_LOG": "off",
        "KINDLER_HOST_NAME": "bench",
    }
    env.pop("PG_HOST", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=ROOT, check=True)
    create = '{"name": "bench-slow", "provider": "k3d"}'
    server = Kindler(env, port, data / "server.log")
    server.start()
    try:
        subprocess.run(
            [
                *("curl", "-sf", "-o", "/dev/null", "-d", create),
                *("-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/json"),
                f"http://127.0.0.1:{port}/api/clusters",
            ],
            check=False,
        )
        rounds(port, 20)  # warm-up: each worker's first requests load what they need
        quiet = rounds(port, args.requests)
        opened = time.monotonic()
        slow_bodies = open_slow(port, args.slow, SLOW_BODY)
        slow_headers = open_slow(port, args.slow, SLOW_HEADER)
        time.sleep(0.5)
        loaded = rounds(port, args.requests)
        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(answer_of, slow_bodies))
        dropped_after = time.monotonic() - opened
        timed_out = sum(answer.startswith(b"HTTP/1.1 408") for answer in answers)
        for sock in [*slow_bodies, *slow_headers]:
            sock.close()
    finally:
        server.stop()
    print(
        f"Kindler on SQLite, 2 workers x 4 threads, KINDLER_BODY_TIMEOUT "
        f"{os.environ.get('KINDLER_BODY_TIMEOUT', '10')} s; {args.requests} GETs of each kind "
        "per phase, one at a time, each on a new connection. Latencies in ms."
    )
    print()
    print("| phase | request | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for phase, times in (
        ("nothing else open", quiet),
        (f"{args.slow} slow bodies + {args.slow} slow headers open", loaded),
    ):
        for kind, label in (("health", "anonymous health"), ("cluster", "token GET cluster")):
            p50, p99, most = percentiles(times[kind])
            print(f"| {phase} | {label} | {p50} | {p99} | {most} |")
    print()
    print(
        f"{timed_out} of {args.slow} slow bodies answered 408; the last was dropped "
        f"{dropped_after:.1f} s after they were opened."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
