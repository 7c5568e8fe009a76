"""Time /ws/tasks: the handshake, how soon a change reaches a subscriber, what idle sockets cost.

Run as `.venv/bin/python bench/tasks_socket.py [--sockets 100] [--interval 1]` (not named
websocket.py: on sys.path it would shadow websocket-client).
It starts a throwaway PostgreSQL and `python -m kindler.wsserver` (the
WebSocket server `manage.py serve` starts) on it, marks operations running and
adds output to them as the reconciler does, and measures with
websocket-client from this process:

- handshake: connect with the API token until the socket is open;
- first update: subscribe until the task's current state arrives;
- change to update: an operation's output gains a phase (its progress
  rises) until the subscriber has the task_update;
- idle cost: the server's CPU time while N sockets each follow a running
  task that does not change, as a share of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench._setup import configure_django, start_postgres  # noqa: E402
from tests.pgserver import free_port  # noqa: E402

TOKEN = "bench-websocket-token-" + "x" * 32


def cpu_seconds(pid: int) -> float:
    """Return the user and system CPU time of pid and its children that still run."""
    total = 0.0
    for process in [pid, *children(pid)]:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def ms(samples: list[float], percentile: int) -> str:
    ordered = sorted(samples)
    return f"{ordered[min(len(ordered) - 1, len(ordered) * percentile // 100)] * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0, help="KINDLER_WS_POLL_INTERVAL")
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    server = start_postgres()
    configure_django(server, KINDLER_API_TOKEN=TOKEN)
    import websocket
    from django.utils import timezone

    from clusters.models import OperationLog, OperationStatus
    from tests.factories import make_cluster, make_operation

    port = free_port()
    env = {
        **os.environ,
        "KINDLER_WS_BIND": f"127.0.0.1:{port}",
        "KINDLER_WS_POLL_INTERVAL": str(args.interval),
        "KINDLER_ACCESS_LOG": "off",
    }
    ws_server = subprocess.Popen(
        [sys.executable, "-m", "kindler.wsserver", "clusters.websocket:application"],
        env=env,
        cwd=HERE.parent,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"ws://127.0.0.1:{port}/ws/tasks"
        header = [f"Authorization: Bearer {TOKEN}"]
        deadline = time.monotonic() + 60
        while True:
            try:
                websocket.create_connection(url, header=header, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        operations = []
        for index in range(args.sockets):
            cluster = make_cluster(name=f"ws-{index}", http_port=20000 + 3 * index)
            operations.append(
                make_operation(cluster, status=OperationStatus.RUNNING, started_at=timezone.now())
            )
        handshakes, firsts, sockets = [], [], []
        for operation in operations:
            started = time.perf_counter()
            socket = websocket.create_connection(url, header=header, timeout=30)
            handshakes.append(time.perf_counter() - started)
            started = time.perf_counter()
            socket.send(json.dumps({"type": "subscribe", "task_id": str(operation.uid)}))
            while json.loads(socket.recv())["type"] != "task_update":
                pass
            firsts.append(time.perf_counter() - started)
            sockets.append(socket)

        before = cpu_seconds(ws_server.pid)
        time.sleep(args.idle_seconds)
        idle = (cpu_seconds(ws_server.pid) - before) / args.idle_seconds

        # Each raises a k3d create's progress (clusters/tasks.py), from the 10 of a started one.
        markers = ["Created network", "Created image volume", "Creating node", "Starting cluster"]
        changes = []
        for round_ in range(args.changes):
            index = round_ % len(operations)
            operation = operations[index]
            output = "\n".join(markers[: round_ // len(operations) + 1])
            # At a random moment of the poll's period, as a reconciler's writes come.
            time.sleep(random.uniform(0, args.interval))
            started = time.perf_counter()
            OperationLog.objects.filter(uid=operation.uid).update(log_output=output)
            json.loads(sockets[index].recv())
            changes.append(time.perf_counter() - started)
            if round_ // len(operations) + 1 >= len(markers):
                break
        for socket in sockets:
            socket.close()
    finally:
        os.killpg(ws_server.pid, signal.SIGTERM)
        ws_server.wait(timeout=30)
        server.destroy()
    print(
        f"/ws/tasks on PostgreSQL, KINDLER_WS_POLL_INTERVAL {args.interval:g} s, "
        f"{args.sockets} sockets (ms: p50 / p95)\n"
        f"handshake with the token        {ms(handshakes, 50):>8} / {ms(handshakes, 95)}\n"
        f"subscribe to first task_update  {ms(firsts, 50):>8} / {ms(firsts, 95)}\n"
        f"change to task_update ({len(changes)})     {ms(changes, 50):>8} / {ms(changes, 95)}\n"
        f"idle: {args.sockets} sockets following running tasks: "
        f"{idle * 100:.1f} % of one core "
        f"({idle / args.sockets * 1000:.2f} ms of CPU per socket-second)"
    )


if __name__ == "__main__":
    main()
