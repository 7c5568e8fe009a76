"""The processes bench/chaos.py runs and breaks: HAProxy, the web server, the reconciler."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.workload import request

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def haproxy_sections(path: Path) -> dict[str, list[str]]:
    """Return an HAProxy config file's sections: header line -> its lines, comments left out."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line.strip())
    return sections


def haproxy_config(workdir: Path, listen: int, pg_port: int) -> tuple[Path, Path]:
    """Write compose/haproxy.cfg's TCP sections for loopback; return (config, socket)."""
    sections = haproxy_sections(ROOT / "compose" / "haproxy.cfg")
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


# The API token of each Kindler started here, by port: anonymous /api/health
# says only whether Kindler is healthy.
_TOKENS: dict[int, str] = {}


def health(port: int, token: str | None = None) -> dict[str, Any] | None:
    """Return /api/health's database part, asked with the token Kindler on port was given."""
    status, body = request(port, "GET", "/api/health", token or _TOKENS.get(port))
    # Without a token: {} once Kindler answers, healthy or not.
    return body.get("database", {}) if status == "200" and isinstance(body, dict) else None


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
    """`python -m kindler.webserver`, in its own process group so it can be killed whole."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.env.get("KINDLER_API_TOKEN"):
            _TOKENS[self.port] = self.env["KINDLER_API_TOKEN"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "kindler.webserver"],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        wait_until(lambda: health(self.port) is not None, 30, "Kindler did not start")

    def reload(self) -> None:
        """SIGHUP: granian replaces the workers one by one, each old one finishing its requests."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGHUP)

    def kill(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM to the main process, which stops its workers; SIGKILL to all after 30 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Reconciler:
    """`manage.py reconcile --interval 1` beside the web server, on the same SQLite file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [PYTHON, str(ROOT / "manage.py"), "reconcile", "--interval", "1"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s; return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        code, self.process = self.process.returncode, None
        return code
