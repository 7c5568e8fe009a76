"""Debian's nginx running the server block docs/api.md documents, on free ports, for a test."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.pgserver import free_port

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def documented_server_block() -> str:
    """Return the one nginx block of docs/api.md."""
    blocks = re.findall(r"```nginx\n(.*?)```", API_PAGE.read_text(), re.S)
    assert len(blocks) == 1, f"docs/api.md should hold one nginx block, not {len(blocks)}"
    return str(blocks[0])


def write_config(folder: Path, listen: int, root: Path, http_port: int, ws_port: int) -> Path:
    """Write a whole nginx.conf around the documented block, pointed at these ports and files."""
    block = documented_server_block()
    for old, new in (
        ("listen 80;", f"listen 127.0.0.1:{listen};"),
        ("root /srv/kindler-webui/dist;", f"root {root};"),
        ("http://127.0.0.1:8000", f"http://127.0.0.1:{http_port}"),
        ("http://127.0.0.1:8001", f"http://127.0.0.1:{ws_port}"),
    ):
        assert old in block, f"the documented block no longer has {old!r}"
        block = block.replace(old, new)
    temp = folder / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx's workers would run as nobody, who cannot read a test's
    # private folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = folder / "nginx.conf"
    config.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'};\nevents {{}}\n"
        f"http {{\n    include /etc/nginx/mime.types;\n"
        f"    access_log {folder / 'access.log'};\n{paths}\n{block}}}\n"
    )
    return config


def check(config: Path) -> subprocess.CompletedProcess[str]:
    """Run `nginx -t` on config."""
    assert NGINX is not None
    return subprocess.run(
        [NGINX, "-t", "-c", str(config), "-p", str(config.parent), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
    )


class Nginx:
    """nginx in the foreground on a free port, in front of Kindler's two servers."""

    def __init__(self, folder: Path, root: Path, http_port: int, ws_port: int) -> None:
        self.port = free_port()
        self.config = write_config(folder, self.port, root, http_port, ws_port)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert NGINX is not None
        self.process = subprocess.Popen(
            [NGINX, "-c", str(self.config), "-p", str(self.config.parent), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=(self.config.parent / "stderr.log").open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/api/health", timeout=5)
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                assert self.process.poll() is None, self.log()
                time.sleep(0.1)
        raise AssertionError(f"nginx did not answer:\n{self.log()}")

    def log(self) -> str:
        return (self.config.parent / "stderr.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
