"""Break PostgreSQL and HAProxy under load; check that no acknowledged write is lost.

Run as `.venv/bin/python bench/chaos.py` (about 3 minutes) or with `--short`
(about 90 seconds; tests/test_chaos.py runs that). It starts, all on loopback:
a throwaway PostgreSQL (tests/pgserver.py), Debian's haproxy with the
`defaults` and `listen postgres` sections of compose/haproxy.cfg in front of
it, and Kindler under gunicorn (2 workers) pointed at HAProxy. A bounded load
generator mixes reads and writes through the API with a Bearer token while
the faults below happen one after another, with recovery in between. For each
fault it reports requests sent, failures by status, max latency, time to
switch down and back (polling /api/health), acknowledged writes and how many
of them PostgreSQL holds at the end, and new conflicts; then whether the
promise held: 0 acknowledged writes lost, 0 failed reads once the switch was
seen, no request longer than the timeout budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/http.py would stand in for the standard library's http package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import psycopg2  # noqa: E402

from tests.pgserver import PostgresServer, free_ports  # noqa: E402

PYTHON = sys.executable
CONNECT_TIMEOUT, STATEMENT_TIMEOUT = 1.0, 2.0
# Connect, then a statement (plus timeouts.py's 1 s margin), then the answer
# from SQLite: the longest a request may take while PostgreSQL goes away.
BUDGET = CONNECT_TIMEOUT + STATEMENT_TIMEOUT + 1.0 + 1.0
FAULTS = ("kill -9", "pg_ctl stop -m fast", "SIGSTOP 10 s", "haproxy disable", "haproxy kill")
RESTART = "Kindler restart in replay"


@dataclass
class Call:
    kind: str  # read | write
    at: float
    latency: float
    status: str  # HTTP code, or the error class when no answer came
    name: str | None = None


@dataclass
class Phase:
    fault: str
    started: float = 0.0
    injected: float = 0.0
    recovered: float = 0.0
    ended: float = 0.0
    note: str = ""
    conflicts_before: int = 0
    conflicts_after: int = 0
    kindler_down: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def haproxy_config(workdir: Path, listen: int, pg_port: int) -> tuple[Path, Path]:
    """Write compose/haproxy.cfg's TCP sections for loopback; return (config, socket)."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in (ROOT / "compose" / "haproxy.cfg").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line.strip())
    admin = workdir / "haproxy.sock"
    out = ["global", f"    stats socket {admin} mode 600 level admin", "    maxconn 1024"]
    for name in ("defaults", "listen postgres"):
        out.append(name)
        for line in sections[name]:
            if line.startswith("bind "):
                line = f"bind 127.0.0.1:{listen}"
            elif line.startswith("server "):
                words = line.split()
                words[2] = f"127.0.0.1:{pg_port}"
                if "resolvers" in words:
                    index = words.index("resolvers")
                    del words[index : index + 2]
                line = " ".join(words)
            elif line.startswith("log "):
                continue
            out.append(f"    {line}")
    config = workdir / "haproxy.cfg"
    config.write_text("\n".join(out) + "\n")
    return config, admin


class HAProxy:
    def __init__(self, config: Path, admin: Path, env: dict[str, str]) -> None:
        self.config, self.admin, self.env = config, admin, env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.process = subprocess.Popen(
            [binary, "-db", "-f", str(self.config)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.admin.exists(), 10, "haproxy did not open its runtime socket")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.admin.unlink(missing_ok=True)

    def command(self, text: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin))
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()


class Kindler:
    """gunicorn with 2 workers, in its own process group so it can be killed whole."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.conf.py")],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.env["CHAOS_LOG"], "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        wait_until(lambda: health(self.port) is not None, 30, "Kindler did not start")

    def kill(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


def wait_until(check: Callable[[], Any], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(message)


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
        return str(exc.code), None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return type(reason).__name__, None


def health(port: int) -> dict[str, Any] | None:
    status, body = request(port, "GET", "/api/health")
    return body["database"] if status == "200" else None


class Load:
    """Threads sending reads and writes until stopped or the request cap is reached."""

    def __init__(self, port: int, token: str, threads: int, cap: int, write_share: float) -> None:
        self.port, self.token, self.threads, self.cap = port, token, threads, cap
        self.write_share = write_share
        self.calls: list[Call] = []
        self.acked: list[str] = []
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

    def _next(self) -> int | None:
        with self.lock:
            if self.counter >= self.cap:
                return None
            self.counter += 1
            return self.counter

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        while not self.stop_event.is_set():
            number = self._next()
            if number is None:
                return
            started = time.monotonic()
            if rng.random() < self.write_share:
                name = f"chaos-{number}"
                port = 1024 + 4 * number
                body = {
                    "name": name,
                    "provider": "k3d",
                    "http_port": port,
                    "https_port": port + 1,
                    "pf_port": port + 2,
                    "node_port": port + 3,
                }
                status, _ = request(self.port, "POST", "/api/clusters", self.token, body)
                call = Call("write", started, time.monotonic() - started, status, name)
            else:
                with self.lock:
                    target = rng.choice(self.acked) if self.acked else None
                path = f"/api/clusters/{target}" if target else "/api/config"
                status, _ = request(self.port, "GET", path, self.token)
                call = Call("read", started, time.monotonic() - started, status, target)
            with self.lock:
                self.calls.append(call)
                if call.kind == "write" and status == "202":
                    self.acked.append(call.name or "")
            # About 40 requests a second in all: load, not a flood, on 2 cores.
            time.sleep(0.1)


class HealthWatch:
    """Poll /api/health every 100 ms and keep (time, active, state) samples."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, str | None, str | None]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            database = health(self.port)
            at = time.monotonic()
            if database is None:
                self.samples.append((at, None, None))
            else:
                self.samples.append((at, database["active"], database["state"]))
            time.sleep(0.1)

    def switched_down(self, after: float) -> float | None:
        for at, active, _ in self.samples:
            if at >= after and active == "sqlite":
                return at - after
        return None

    def switched_back(self, after: float) -> float | None:
        run: list[float] = []
        for at, active, state in self.samples:
            if at < after:
                continue
            run = [*run, at] if (active, state) == ("postgres", "primary") else []
            if len(run) == 3:
                return run[0] - after
        return None


def postgres_count(pg: PostgresServer, sql: str, params: Any = None) -> int:
    conn = psycopg2.connect(**pg.connect_kwargs("kindler"), connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.fetchone()[0])
    except psycopg2.errors.UndefinedTable:
        return 0
    finally:
        conn.close()


def open_conflicts(pg: PostgresServer) -> int:
    return postgres_count(pg, "SELECT count(*) FROM kindler_db_conflict WHERE resolved_at IS NULL")


def wait_for_primary(port: int, timeout: float) -> bool:
    """Wait until Kindler answers from PostgreSQL with an empty journal."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        database = health(port)
        sync = (database or {}).get("sync") or {}
        pending = (sync.get("journal") or {}).get("pending")
        ok = database is not None and database["state"] == "primary" and pending in (0, None)
        streak = streak + 1 if ok else 0
        if streak >= 5:
            return True
        time.sleep(0.1)
    return False


class Chaos:
    def __init__(self, short: bool) -> None:
        self.short = short
        self.hold = 3.0 if short else 10.0
        self.settle = 1.5 if short else 4.0
        self.workdir = Path(tempfile.mkdtemp(prefix="kindler-chaos-"))
        self.token = secrets.token_hex(16)
        self.phases: list[Phase] = []

    def setup(self) -> None:
        # fsync and synchronous commits on: a kill -9 must not drop an acknowledged
        # commit, or the count would blame Kindler for PostgreSQL's settings.
        self.pg = PostgresServer(durable=True)
        self.pg.init()
        self.pg.start()
        self.pg.create_database("kindler")
        self.haproxy_port, self.web_port = free_ports(2)
        config, admin = haproxy_config(self.workdir, self.haproxy_port, self.pg.port)
        env = {**os.environ, "PG_USER": self.pg.user}
        self.haproxy = HAProxy(config, admin, env)
        self.haproxy.start()
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PG_", "KINDLER_", "PROMETHEUS_"))
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="kindler.settings",
            PG_HOST="127.0.0.1",
            PG_PORT=str(self.haproxy_port),
            PG_DATABASE="kindler",
            PG_USER=self.pg.user,
            PG_PASSWORD=self.pg.password,
            PG_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
            PG_STATEMENT_TIMEOUT=str(STATEMENT_TIMEOUT),
            SQLITE_PATH=str(self.workdir / "kindler.db"),
            SECRET_KEY=secrets.token_urlsafe(50),
            KINDLER_API_TOKEN=self.token,
            KINDLER_HEALTH_INTERVAL="0.5",
            KINDLER_MIRROR_INTERVAL="1",
            KINDLER_WORKERS="2",
            KINDLER_BIND=f"127.0.0.1:{self.web_port}",
            KINDLER_ACCESS_LOG="/dev/null",
            CHAOS_LOG=str(self.workdir / "kindler.log"),
            # The fake k3d the tests use: a create passes preflight without a real k3d.
            PATH=f"{ROOT / 'tests' / 'fakes'}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        self.kindler = Kindler(self.env, self.web_port)
        self.kindler.start()

    def teardown(self) -> None:
        log = Path(self.env.get("CHAOS_LOG", "/nonexistent")) if hasattr(self, "env") else None
        if log is not None and log.exists():
            (HERE / "out").mkdir(exist_ok=True)
            shutil.copy(log, HERE / "out" / "chaos-kindler.log")
        for stop in (self.kindler.stop, self.haproxy.kill, lambda: self.pg.destroy()):
            try:
                stop()
            except Exception as exc:  # tear everything down regardless
                print(f"teardown: {exc}", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def faults(self) -> list[tuple[str, Callable[[], object], Callable[[], object], float]]:
        pause = 4.0 if self.short else 10.0
        return [
            ("kill -9", self.pg.kill, self.pg.ensure_running, self.hold),
            ("pg_ctl stop -m fast", lambda: self.pg.stop("fast"), self.pg.start, self.hold),
            (f"SIGSTOP {pause:g} s", self.pg.pause, self.pg.resume, pause),
            (
                "haproxy disable",
                lambda: self.haproxy.command("disable server postgres/primary"),
                lambda: self.haproxy.command("enable server postgres/primary"),
                self.hold,
            ),
            ("haproxy kill", self.haproxy.kill, self.haproxy.start, self.hold),
        ]

    def run(self) -> dict[str, Any]:
        cap = 12000 if self.short else 40000
        self.load = Load(self.web_port, self.token, threads=4, cap=cap, write_share=0.4)
        self.watch = HealthWatch(self.web_port)
        self.watch.thread.start()
        self.load.start()
        try:
            for name, inject, recover, hold in self.faults():
                self.fault(name, inject, recover, hold)
            self.restart_during_replay()
        finally:
            self.load.stop()
            self.watch.stop_event.set()
        settled = wait_for_primary(self.web_port, 120)
        return self.report(settled)

    def fault(
        self, name: str, inject: Callable[[], object], recover: Callable[[], object], hold: float
    ) -> Phase:
        phase = Phase(name, started=time.monotonic(), conflicts_before=open_conflicts(self.pg))
        time.sleep(self.settle)
        phase.injected = time.monotonic()
        inject()
        time.sleep(hold)
        phase.recovered = time.monotonic()
        recover()
        phase.extra["back"] = wait_for_primary(self.web_port, 60)
        time.sleep(self.settle)
        phase.ended = time.monotonic()
        phase.conflicts_after = open_conflicts(self.pg)
        self.phases.append(phase)
        return phase

    def restart_during_replay(self) -> None:
        phase = Phase(RESTART, started=time.monotonic(), conflicts_before=open_conflicts(self.pg))
        time.sleep(self.settle)
        phase.injected = time.monotonic()
        self.pg.stop("fast")
        time.sleep(self.hold * 2)
        phase.recovered = time.monotonic()
        self.pg.start()
        seen = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            database = health(self.web_port)
            if database is not None and database["state"] != "fallback":
                seen = database
                break
            # About 40 requests a second in all: load, not a flood, on 2 cores.
            time.sleep(0.1)
        down_at = time.monotonic()
        self.kindler.kill()
        pending = ((seen or {}).get("sync") or {}).get("journal", {}).get("pending")
        phase.note = (
            f"killed (SIGKILL) in state {seen['state'] if seen else 'unknown'}"
            f" with {pending} journal entries left"
        )
        self.kindler.start()
        phase.kindler_down = (down_at, time.monotonic())
        phase.extra["back"] = wait_for_primary(self.web_port, 60)
        time.sleep(self.settle)
        phase.ended = time.monotonic()
        phase.conflicts_after = open_conflicts(self.pg)
        self.phases.append(phase)

    def report(self, settled: bool) -> dict[str, Any]:
        acked_all = [c.name for c in self.load.calls if c.kind == "write" and c.status == "202"]
        found = set()
        if acked_all:
            conn = psycopg2.connect(**self.pg.connect_kwargs("kindler"))
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT name FROM clusters_cluster WHERE name = ANY(%s)", (acked_all,)
                )
                found = {row[0] for row in cursor.fetchall()}
            conn.close()
        rows = [self.phase_row(phase, found) for phase in self.phases]
        return {
            "short": self.short,
            "budget_seconds": BUDGET,
            "settled": settled,
            "requests": len(self.load.calls),
            "faults": rows,
            "promise_kept": settled and all(row["promise_kept"] for row in rows),
        }

    def phase_row(self, phase: Phase, found: set[str]) -> dict[str, Any]:
        calls = [c for c in self.load.calls if phase.started <= c.at < phase.ended]
        ok = {"read": {"200"}, "write": {"202"}}
        failed = Counter(f"{c.kind} {c.status}" for c in calls if c.status not in ok[c.kind])
        acked = [c.name for c in calls if c.kind == "write" and c.status == "202"]
        down = self.watch.switched_down(phase.injected)
        back = self.watch.switched_back(phase.recovered)
        detected = phase.injected + (down if down is not None else 0.0)

        def excused(call: Call) -> bool:
            # Nobody answers while Kindler itself is restarted; that is not a read lost.
            window = phase.kindler_down
            return window is not None and window[0] - 1 <= call.at <= window[1] + 1

        late_reads = [
            c
            for c in calls
            if c.kind == "read" and c.status != "200" and c.at > detected and not excused(c)
        ]
        slow = [c for c in calls if c.latency > BUDGET]
        acked_at = {c.name: c.at + c.latency for c in self.load.calls if c.status == "202"}
        # How long before the switch was seen each cluster read as 404 had been acknowledged.
        unseen = [
            round(detected - acked_at[c.name], 2)
            for c in late_reads
            if c.status == "404" and c.name in acked_at
        ]
        lost = [name for name in acked if name not in found]
        row = {
            "fault": phase.fault,
            "sent": len(calls),
            "failed": dict(sorted(failed.items())),
            "max_latency_s": round(max((c.latency for c in calls), default=0.0), 3),
            "switch_down_s": None if down is None else round(down, 2),
            "switch_back_s": None if back is None else round(back, 2),
            "acked_writes": len(acked),
            "acked_in_postgres": len(acked) - len(lost),
            "conflicts": phase.conflicts_after - phase.conflicts_before,
            "failed_reads_after_switch": len(late_reads),
            # 404 for a cluster Kindler had acknowledged: SQLite's copy was behind.
            "stale_reads_after_switch": sum(1 for c in late_reads if c.status == "404"),
            "over_budget": len(slow),
            "note": phase.note,
            "not_found_acked_before_switch_s": sorted(unseen),
        }
        row["promise_kept"] = not lost and not late_reads and not slow
        return row


def markdown(result: dict[str, Any]) -> str:
    """Return the result as a Markdown table with the promise check."""
    head = (
        "| fault | sent | failed (by status) | max latency s | switch down s | switch back s "
        "| acked writes | in PostgreSQL | conflicts | failed reads after switch (of them 404) "
        "| over budget | promise |"
    )
    lines = [head, "|" + "---|" * 12]
    for row in result["faults"]:
        failed = ", ".join(f"{k}: {v}" for k, v in row["failed"].items()) or "none"
        cells = [
            row["fault"],
            row["sent"],
            failed,
            row["max_latency_s"],
            "—" if row["switch_down_s"] is None else row["switch_down_s"],
            "—" if row["switch_back_s"] is None else row["switch_back_s"],
            row["acked_writes"],
            row["acked_in_postgres"],
            row["conflicts"],
            f"{row['failed_reads_after_switch']} ({row['stale_reads_after_switch']})",
            row["over_budget"],
            "kept" if row["promise_kept"] else "BROKEN",
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    notes = [f"- {row['fault']}: {row['note']}" for row in result["faults"] if row["note"]]
    notes += [
        f"- {row['fault']}: reads answered 404 after the switch were for clusters PostgreSQL had"
        f" acknowledged {', '.join(map(str, row['not_found_acked_before_switch_s']))} s before"
        " the switch was seen (negative: after it)"
        for row in result["faults"]
        if row["not_found_acked_before_switch_s"]
    ]
    summary = (
        f"Timeout budget {result['budget_seconds']:g} s; {result['requests']} requests; "
        f"settled back on PostgreSQL with an empty journal: {result['settled']}; "
        f"promise {'kept for every fault' if result['promise_kept'] else 'BROKEN'}."
    )
    return "\n".join([*lines, "", *notes, "", summary])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="Shorter holds (about 90 seconds).")
    parser.add_argument("--json", type=Path, help="Also write the result as JSON here.")
    args = parser.parse_args()
    chaos = Chaos(short=args.short)
    chaos.setup()
    try:
        result = chaos.run()
    finally:
        chaos.teardown()
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["promise_kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
