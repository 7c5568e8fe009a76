"""Fake k3d, kind and docker executables, and a handle on what they did.

tests/conftest.py puts this folder first on PATH for the whole run, so no
test ever starts a real provider. See fakelib.py for the knobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fakes.fakelib import new_cluster

FOLDER = Path(__file__).resolve().parent


class FakeTools:
    """The state folder of the fake executables, for one test."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def calls(self, binary: str | None = None) -> list[list[str]]:
        """Return the argv of every call so far (optionally of one binary), in order."""
        return [
            entry["argv"]
            for entry in self._entries()
            if binary is None or entry["argv"][0] == binary
        ]

    def actions(self) -> list[list[str]]:
        """Return the calls that change something (everything but listings)."""
        return [argv for argv in self.calls() if not is_listing(argv)]

    def stdin_of(self, argv_prefix: list[str]) -> str | None:
        """Return what the first call starting with argv_prefix read on stdin."""
        for entry in self._entries():
            if entry["argv"][: len(argv_prefix)] == argv_prefix:
                return str(entry["stdin"]) if entry["stdin"] is not None else None
        raise AssertionError(f"no call starting with {argv_prefix}")

    def clusters(self) -> dict[str, Any]:
        """Return the clusters the fakes run now: name -> {provider, running, ip, ...}."""
        path = self.state / "clusters.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def add(self, name: str, provider: str = "k3d", running: bool = True) -> None:
        """Pretend the provider already has a cluster."""
        data = self.clusters()
        data[name] = {**new_cluster(data, provider), "running": running}
        (self.state / "clusters.json").write_text(json.dumps(data))

    def running(self) -> dict[str, bool]:
        """Return whether each cluster the fakes have runs: name -> running."""
        return {name: info["running"] for name, info in self.clusters().items()}

    def address(self, name: str) -> str:
        """Return the address the fakes gave the cluster's server node."""
        return str(self.clusters()[name]["ip"])

    def child_pid(self) -> int:
        return int((self.state / "child.pid").read_text())

    def _entries(self) -> list[dict[str, Any]]:
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


def is_listing(argv: list[str]) -> bool:
    """Return True for a call that only reads: a listing, or a version check."""
    return argv[1:3] in (["cluster", "list"], ["get", "clusters"]) or argv[1:2] in (
        ["ps"],
        ["inspect"],
        ["version"],
    )
