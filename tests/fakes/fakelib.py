"""Shared by the fake k3d, kind and docker executables the tests put on PATH.

They record every call (argv and stdin) to calls.jsonl in the state folder,
keep the clusters they "run" in clusters.json, print output shaped like the
real tools', and misbehave on demand:

- KINDLER_FAKE_STATE: the state folder (default: <tmp>/kindler-fakes).
- KINDLER_FAKE_FAIL: comma-separated operations that fail, e.g. ``create`` or
  ``k3d:create`` (operations: create, delete, start, stop, list).
- KINDLER_FAKE_SLEEP: seconds an action takes; its output is spread over them.
- KINDLER_FAKE_CHILD: when set, an action first starts a child process that
  sleeps (its pid goes to child.pid), to show what a timeout kills.

Node addresses are Docker's: a k3d cluster gets a network of its own
(172.19.0.0/16 up, or its --subnet) with the server at .2; kind's nodes share
the `kind` network (172.18.0.0/16). A stopped node has no address.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    configured = os.environ.get("KINDLER_FAKE_STATE")
    if configured:
        path = Path(configured)
    else:
        import tempfile  # only here: importing it costs a fake's every call

        path = Path(tempfile.gettempdir()) / "kindler-fakes"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(argv: list[str], stdin: str | None) -> None:
    """Append this call to calls.jsonl."""
    line = json.dumps({"argv": argv, "stdin": stdin, "pid": os.getpid()})
    with (state_dir() / "calls.jsonl").open("a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line + "\n")


@contextlib.contextmanager
def clusters() -> Iterator[dict[str, Any]]:
    """Yield the clusters (name -> {provider, running}) and save changes, under a lock."""
    folder = state_dir()
    with (folder / "clusters.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / "clusters.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        yield data
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)


def snapshot() -> dict[str, Any]:
    path = state_dir() / "clusters.json"
    return json.loads(path.read_text()) if path.exists() else {}


def lowest_free(taken: set[int], first: int) -> int:
    """Return the lowest whole number from first that is not taken."""
    number = first
    while number in taken:
        number += 1
    return number


def new_cluster(data: dict[str, Any], provider: str, subnet: str | None = None) -> dict[str, Any]:
    """Return a running cluster's record, its nodes on addresses Docker would give them."""
    import ipaddress  # only here, as tempfile above

    if provider == "kind":
        # Every kind node is on the one `kind` network, 172.18.0.0/16.
        taken = {
            int(info["ip"].rsplit(".", 1)[1])
            for info in data.values()
            if info["provider"] == "kind" and "ip" in info
        }
        return {"provider": "kind", "running": True, "ip": f"172.18.0.{lowest_free(taken, 2)}"}
    if subnet:
        network = ipaddress.IPv4Network(subnet)
    else:
        taken = {
            int(info["network"].split(".")[1])
            for info in data.values()
            if info.get("network", "").startswith("172.")
        }
        network = ipaddress.IPv4Network(f"172.{lowest_free(taken, 19)}.0.0/16")
    return {
        "provider": "k3d",
        "running": True,
        "network": str(network),
        "ip": str(network.network_address + 2),
        "lb_ip": str(network.network_address + 3),
    }


def should_fail(binary: str, operation: str) -> bool:
    wanted = {item.strip() for item in os.environ.get("KINDLER_FAKE_FAIL", "").split(",")}
    return operation in wanted or f"{binary}:{operation}" in wanted


def start_child() -> None:
    if os.environ.get("KINDLER_FAKE_CHILD"):
        import subprocess

        child = subprocess.Popen(["sleep", "600"])
        (state_dir() / "child.pid").write_text(str(child.pid))


def say(lines: list[str], stream: Any = None) -> None:
    """Print lines spread over KINDLER_FAKE_SLEEP seconds, flushing each one."""
    total = float(os.environ.get("KINDLER_FAKE_SLEEP") or 0)
    pause = total / max(1, len(lines))
    for line in lines:
        print(line, file=stream or sys.stdout, flush=True)
        if pause:
            time.sleep(pause)


def begin(binary: str) -> list[str]:
    """Record the call and return the arguments after the program name."""
    argv = sys.argv[1:]
    stdin = None
    if "-" in argv or "--config=-" in argv:
        stdin = sys.stdin.read()
    record([binary, *argv], stdin)
    return argv
