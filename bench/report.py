"""Run every benchmark in bench/ and write bench/RESULTS.md.

Run as `.venv/bin/python bench/report.py` (`--only chaos,api` for some,
`--short` for chaos.py's short run, `--before DIR --before-label COMMIT` to
time another checkout beside this one in api.py). Each script prints its own tables; this
collects them under the machine and the versions they were measured with, so
anyone can reproduce the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run by path, so only bench/ is on sys.path: the checkout root holds tests/.
sys.path.insert(0, str(ROOT))

from tests.pgserver import find_bindir  # noqa: E402

BENCHMARKS = (
    "router",
    "api",
    "replay",
    "adopt",
    "chaos",
    "reconcile",
    "scale",
    "stop",
    "slowclients",
)
TIMEOUT = 45 * 60


def command_output(*args: str) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (
        (result.stdout or result.stderr).strip().splitlines()[0]
        if result.returncode == 0
        else "not found"
    )


def machine() -> list[tuple[str, str]]:
    """Return what the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return [
        ("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("CPU", f"{cpu}, {os.cpu_count()} cores"),
        ("Memory", memory),
    ]


def versions() -> list[tuple[str, str]]:
    """Return the versions of everything the benchmarks exercise."""

    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    try:
        postgres = command_output(str(find_bindir() / "postgres"), "--version")
    except RuntimeError:
        postgres = "not found"
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    return [
        ("Python", platform.python_version()),
        ("Django", package("django")),
        ("psycopg2", package("psycopg2-binary")),
        ("granian", package("granian")),
        ("prometheus-client", package("prometheus-client")),
        ("SQLite", sqlite3.sqlite_version),
        ("PostgreSQL", postgres),
        ("HAProxy", command_output(haproxy, "-v")),
        ("Kindler commit", command_output("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")),
    ]


def run(name: str, options: argparse.Namespace) -> tuple[str, int, float]:
    """Run one benchmark; return its output, exit status and duration."""
    args = [sys.executable, str(HERE / f"{name}.py")]
    if options.short and name == "chaos":
        args.append("--short")
    if options.before and name == "api":
        args += ["--before", str(options.before), "--before-label", options.before_label]
    if name == "chaos":
        args += ["--json", str(HERE / "out" / "chaos.json")]
    started = time.monotonic()
    try:
        result = subprocess.run(
            args, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return f"Stopped after {TIMEOUT // 60} minutes.", -1, time.monotonic() - started
    output = result.stdout.strip()
    if result.returncode != 0 and result.stderr.strip():
        output += "\n\nstderr (last lines):\n\n" + "\n".join(
            "    " + line for line in result.stderr.strip().splitlines()[-15:]
        )
    return output, result.returncode, time.monotonic() - started


def is_markdown(output: str) -> bool:
    """Return True when a benchmark printed Markdown tables rather than plain text."""
    return output.lstrip().startswith("| ") or "\n|---" in output


def table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="Comma-separated benchmarks to run (default: all).")
    parser.add_argument("--short", action="store_true", help="Run chaos.py in its short form.")
    parser.add_argument("--before", type=Path, help="another checkout for api.py to time too")
    parser.add_argument("--before-label", default="the --before checkout")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    wanted = args.only.split(",") if args.only else list(BENCHMARKS)
    present = [name for name in wanted if (HERE / f"{name}.py").exists()]
    missing = [name for name in wanted if name not in present]
    lines = [
        "# Kindler benchmark results",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `.venv/bin/python bench/report.py"
        + (" --short" if args.short else "")
        + (f" --before <checkout of {args.before_label}>" if args.before else "")
        + "`. Every run starts its own PostgreSQL, HAProxy and granian on loopback.",
        "",
        "## Machine",
        "",
        *table(machine()),
        "",
        "## Versions",
        "",
        *table(versions()),
        "",
    ]
    status = 0
    for name in present:
        print(f"Running bench/{name}.py ...", flush=True)
        output, code, seconds = run(name, args)
        status = status or (code != 0)
        outcome = "finished" if code == 0 else f"exited with status {code}"
        lines += [
            f"## {name}.py",
            "",
            f"`bench/{name}.py` {outcome} in {seconds:.0f} s.",
            "",
            output if is_markdown(output) else f"```\n{output}\n```",
            "",
        ]
    if missing:
        lines += ["## Not run", "", *(f"- bench/{name}.py did not exist yet." for name in missing)]
    args.output.write_text("\n".join(lines).rstrip() + "\n")
    print(f"Wrote {args.output}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
