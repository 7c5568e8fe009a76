"""Bounded API load for bench/chaos.py, and the check of every write it had acknowledged.

Each thread creates clusters, changes their http_port (PATCH) and deletes
them, and reads them back. One cluster is never sent two requests at once,
so per cluster the order of the answers is the order of the changes. Every
create and PATCH asks for a port no request asked for before, so a value in
PostgreSQL names the request that wrote it.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

MAX_PORT = 65535
ACKED, REFUSED, UNKNOWN = "acked", "refused", "unknown"
SUCCESS = {"read": "200", "create": "202", "patch": "200", "delete": "202"}


@dataclass
class Call:
    kind: str  # read | create | patch | delete
    at: float
    latency: float
    status: str  # HTTP code, or the error class when no answer came
    name: str | None = None
    value: int | None = None  # the http_port a create or PATCH asked for
    detail: str | None = None  # the JSON "detail" of an answer that was not a success

    @property
    def ended(self) -> float:
        return self.at + self.latency

    @property
    def is_write(self) -> bool:
        return self.kind != "read"

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS[self.kind]

    def outcome(self) -> str:
        """Return whether the change was acknowledged, refused (nothing saved) or unknown."""
        if self.ok:
            return ACKED
        if self.status.startswith("4"):
            return REFUSED
        if self.status == "503" and self.detail and "nothing was saved" in self.detail.lower():
            return REFUSED
        # No answer, a 500, or a 503 that does not say nothing was saved.
        return UNKNOWN


@dataclass(frozen=True)
class Problem:
    at: float
    name: str
    what: str


def request(
    port: int, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[str, Any]:
    """Return (status, decoded JSON or None); status is the error class without an answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return str(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read() or b"null")
        except (OSError, ValueError, http.client.HTTPException):
            answer = None
        return str(exc.code), answer
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return type(reason).__name__, None


def detail_of(answer: Any) -> str | None:
    if isinstance(answer, dict) and isinstance(answer.get("detail"), str):
        return str(answer["detail"])
    return None


class Load:
    """Threads sending reads and writes until stopped or the request cap is reached."""

    def __init__(self, port: int, token: str, threads: int, cap: int, write_share: float) -> None:
        self.port, self.token, self.threads, self.cap = port, token, threads, cap
        self.write_share = write_share
        self.calls: list[Call] = []
        # Clusters whose create was acknowledged and that no delete was sent for.
        self.live: list[str] = []
        self.busy: set[str] = set()
        # A cluster that PATCHes favour (the one a fault holds locked).
        self.hot: str | None = None
        self.next_port = 1024
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.counter = 0
        self.workers: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self.workers.append(worker)

    def stop(self) -> None:
        self.stop_event.set()
        for worker in self.workers:
            worker.join(timeout=60)

    def make_hot(self, older_than: float) -> str | None:
        """Favour the oldest live cluster acknowledged before older_than in PATCHes; return it."""
        with self.lock:
            live = set(self.live)
            for call in self.calls:
                if (
                    call.kind == "create"
                    and call.ok
                    and call.ended < older_than
                    and call.name in live
                ):
                    self.hot = call.name
                    return call.name
        return None

    def _ports(self, count: int) -> int | None:
        if self.next_port + count - 1 > MAX_PORT:
            return None
        first, self.next_port = self.next_port, self.next_port + count
        return first

    def _choose(self, rng: random.Random) -> tuple[str, str | None, int | None]:
        """Return (kind, cluster, port) for the next request and mark the cluster busy."""
        with self.lock:
            self.counter += 1
            if rng.random() >= self.write_share:
                free = [name for name in self.live[-200:] if name not in self.busy]
                return "read", rng.choice(free) if free else None, None
            roll = rng.random()
            idle = [name for name in self.live if name not in self.busy]
            if self.hot in idle and roll < 0.5:
                kind, name = "patch", self.hot
            elif roll < 0.5 or not idle:
                kind, name = "create", f"chaos-{self.counter}"
            elif roll < 0.85:
                kind, name = "patch", rng.choice(idle)
            else:
                candidates = [n for n in idle if n != self.hot]
                if not candidates:
                    return "read", None, None
                kind, name = "delete", rng.choice(candidates)
                self.live.remove(name)
            port = None
            if kind in ("create", "patch"):
                port = self._ports(4 if kind == "create" else 1)
                if port is None:
                    return "read", None, None
            assert name is not None
            self.busy.add(name)
            return kind, name, port

    def _send(self, kind: str, name: str | None, port: int | None) -> tuple[str, Any]:
        if kind == "read":
            return request(
                self.port, "GET", f"/api/clusters/{name}" if name else "/api/config", self.token
            )
        if kind == "create":
            assert port is not None
            body = {
                "name": name,
                "provider": "k3d",
                "http_port": port,
                "https_port": port + 1,
                "pf_port": port + 2,
                "node_port": port + 3,
            }
            return request(self.port, "POST", "/api/clusters", self.token, body)
        if kind == "patch":
            path = f"/api/clusters/{name}"
            return request(self.port, "PATCH", path, self.token, {"http_port": port})
        return request(self.port, "DELETE", f"/api/clusters/{name}", self.token)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        while not self.stop_event.is_set():
            with self.lock:
                if self.counter >= self.cap:
                    return
            kind, name, port = self._choose(rng)
            started = time.monotonic()
            status, answer = self._send(kind, name, port)
            call = Call(kind, started, time.monotonic() - started, status, name, port)
            if not call.ok:
                call.detail = detail_of(answer)
            with self.lock:
                self.calls.append(call)
                if kind != "read" and name is not None:
                    self.busy.discard(name)
                if kind == "create" and call.ok and name is not None:
                    self.live.append(name)
            # About 40 requests a second in all: load, not a flood, on 2 cores.
            time.sleep(0.1)


def check(calls: list[Call], rows: dict[str, tuple[str, int]]) -> list[Problem]:
    """Compare every answered write with PostgreSQL's rows (name -> desired_state, http_port).

    A value is expected when the last acknowledged write of it set it; a
    later write with an unknown outcome may also have; a write answered
    "nothing was saved" must have left no trace.
    """
    problems: list[Problem] = []
    by_name: dict[str, list[Call]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c.at):
        if call.is_write and call.name is not None:
            by_name[call.name].append(call)
    for name, ops in by_name.items():
        create, row = ops[0], rows.get(name)
        if create.outcome() == REFUSED:
            if row is not None:
                said = f"{create.status} {create.detail or ''}".strip()
                problems.append(Problem(create.ended, name, f"create answered {said}, yet saved"))
            continue
        if create.outcome() == UNKNOWN:
            continue
        delete = next((c for c in ops if c.kind == "delete"), None)
        deleted = None if delete is None else delete.outcome()
        if row is None:
            # The reconciler removes a deleted cluster's row once k3d deleted it.
            if deleted not in (ACKED, UNKNOWN):
                problems.append(Problem(create.ended, name, "acknowledged create missing"))
            continue
        desired, http_port = row
        if deleted == ACKED and desired != "absent":
            assert delete is not None
            problems.append(Problem(delete.ended, name, f"acknowledged delete, still {desired}"))
        elif deleted in (None, REFUSED) and desired == "absent":
            at = delete.ended if delete is not None else create.ended
            problems.append(Problem(at, name, "absent, but no delete was acknowledged"))
        allowed, decisive = {create.value}, create
        for call in ops:
            if call.kind != "patch":
                continue
            if call.outcome() == ACKED:
                allowed, decisive = {call.value}, call
            elif call.outcome() == UNKNOWN:
                allowed.add(call.value)
        if http_port not in allowed:
            expected = ", ".join(str(v) for v in sorted(v for v in allowed if v is not None))
            problems.append(
                Problem(decisive.ended, name, f"http_port {http_port}, expected {expected}")
            )
    return problems
