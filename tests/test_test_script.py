"""scripts/test runs every test mode, reports each one last, and fails if any failed.

The loop lives in scripts/lib.sh (run_test_modes); a stub stands in for pytest.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NEEDS_POSTGRES
from tests.environment import RUN_KNOBS, child_environ

ROOT = Path(__file__).resolve().parent.parent
STUB = """#!/bin/sh
echo "ran with $*"
echo "summary of $KINDLER_TEST_MODE"
eval "exit \\${STUB_EXIT_$KINDLER_TEST_MODE:-0}"
"""


def run_modes(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "stub"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return subprocess.run(
        ["bash", "-c", f'. scripts/lib.sh; run_test_modes "$#" {stub} "$@"', "test", *args],
        cwd=ROOT,
        env=child_environ(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_failing_postgres_run_still_runs_sqlite_and_fails(tmp_path: Path) -> None:
    result = run_modes(tmp_path, STUB_EXIT_postgres="1")
    assert (result.returncode, result.stdout.splitlines()) == (
        1,
        [
            "== Tests with KINDLER_TEST_MODE=postgres",
            "ran with ",
            "summary of postgres",
            "== Tests with KINDLER_TEST_MODE=sqlite",
            "ran with ",
            "summary of sqlite",
            "== Summary",
            "postgres: summary of postgres (exit 1)",
            "sqlite: summary of sqlite (exit 0)",
        ],
    )


@pytest.mark.parametrize(
    ("postgres", "sqlite", "expected"), [("0", "0", 0), ("0", "2", 2), ("3", "2", 3)]
)
def test_the_status_is_the_first_failing_modes(
    tmp_path: Path, postgres: str, sqlite: str, expected: int
) -> None:
    result = run_modes(tmp_path, STUB_EXIT_postgres=postgres, STUB_EXIT_sqlite=sqlite)
    assert (result.returncode, result.stdout.splitlines()[-2:]) == (
        expected,
        [
            f"postgres: summary of postgres (exit {postgres})",
            f"sqlite: summary of sqlite (exit {sqlite})",
        ],
    )


def test_kindler_test_modes_picks_the_modes(tmp_path: Path) -> None:
    result = run_modes(tmp_path, "-x", KINDLER_TEST_MODES="sqlite")
    assert (result.returncode, result.stdout.splitlines()) == (
        0,
        [
            "== Tests with KINDLER_TEST_MODE=sqlite",
            "ran with -x",
            "summary of sqlite",
            "== Summary",
            "sqlite: summary of sqlite (exit 0)",
        ],
    )


def test_the_callers_test_modes_and_workers_do_not_reach_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As under `KINDLER_TEST_MODES=sqlite KINDLER_TEST_WORKERS=0 scripts/test`.
    for name, value in [
        ("KINDLER_TEST_MODES", "sqlite"),
        ("KINDLER_TEST_WORKERS", "0"),
        ("PYTEST_ADDOPTS", "-x"),
    ]:
        monkeypatch.setenv(name, value)
    result = run_modes(tmp_path)
    assert (result.returncode, result.stdout.splitlines()[-3:]) == (
        0,
        [
            "== Summary",
            "postgres: summary of postgres (exit 0)",
            "sqlite: summary of sqlite (exit 0)",
        ],
    )


def test_the_processes_the_tests_start_get_none_of_the_run_knobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in RUN_KNOBS:
        monkeypatch.setenv(name, "the caller's")
    assert sorted(set(child_environ()) & RUN_KNOBS) == []


def test_nothing_collected_in_sqlite_is_no_failure_for_named_tests(tmp_path: Path) -> None:
    result = run_modes(tmp_path, "tests/db/sync", STUB_EXIT_sqlite="5")
    assert (result.returncode, result.stdout.splitlines()[-2:]) == (
        0,
        [
            "postgres: summary of postgres (exit 0)",
            "sqlite: no SQLite-only tests among the ones asked for",
        ],
    )


def test_nothing_collected_in_a_whole_run_fails(tmp_path: Path) -> None:
    result = run_modes(tmp_path, STUB_EXIT_sqlite="5")
    assert (result.returncode, result.stdout.splitlines()[-1]) == (
        5,
        "sqlite: summary of sqlite (exit 5)",
    )


def test_scripts_test_runs_pytest_through_the_loop() -> None:
    lines = (ROOT / "scripts" / "test").read_text().splitlines()
    assert lines[-2:] == [
        'workers="${KINDLER_TEST_WORKERS:-3}"',
        'run_test_modes "$#" env -u PYTHONDONTWRITEBYTECODE'
        ' .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"',
    ]


def test_postgres_only_tests_named_in_sqlite_mode_are_skipped_with_the_reason() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "tests/db/sync/test_replay.py"],
        cwd=ROOT,
        env=child_environ(KINDLER_TEST_MODE="sqlite"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stdout.splitlines()
    skipped = re.compile(r"SKIPPED \[(\d+)\] tests/db/sync/test_replay\.py(:\d+)?: (.*)")
    reports = [match for line in lines if (match := skipped.fullmatch(line))]
    summary = re.fullmatch(r"(\d+) skipped in .*", lines[-1])
    assert summary is not None, lines[-1]
    assert (result.returncode, {report[3] for report in reports}) == (0, {NEEDS_POSTGRES})
    assert sum(int(report[1]) for report in reports) == int(summary[1])


def test_compile_sources_writes_bytecode_where_the_environment_says_not_to(
    tmp_path: Path,
) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    for source in ("manage.py", "kindler/settings.py", "clusters/models.py", "tests/test_x.py"):
        (tmp_path / source).parent.mkdir(exist_ok=True)
        (tmp_path / source).write_text("VALUE = 1\n")
    subprocess.run(
        ["bash", "-c", f". {ROOT / 'scripts' / 'lib.sh'}; compile_sources tests"],
        cwd=tmp_path,
        env=child_environ(PYTHONDONTWRITEBYTECODE="1"),
        check=True,
        timeout=60,
    )
    tag = sys.implementation.cache_tag
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.pyc")) == [
        f"__pycache__/manage.{tag}.pyc",
        f"clusters/__pycache__/models.{tag}.pyc",
        f"kindler/__pycache__/settings.{tag}.pyc",
        f"tests/__pycache__/test_x.{tag}.pyc",
    ]


@pytest.mark.parametrize(
    ("script", "compiled"), [("test", "compile_sources tests bench"), ("run", "compile_sources")]
)
def test_the_scripts_compile_kindler_before_starting_it(script: str, compiled: str) -> None:
    lines = (ROOT / "scripts" / script).read_text().splitlines()
    assert (
        lines.index(compiled)
        == next(index for index, line in enumerate(lines) if line.startswith("ensure_venv ")) + 1
    )


def test_compile_sources_never_stops_the_script_that_calls_it(tmp_path: Path) -> None:
    # Bytecode only saves time: a file it cannot compile (or a folder it may not
    # write to) must not keep scripts/run (set -e) from starting.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (tmp_path / "kindler").mkdir()
    (tmp_path / "kindler" / "broken.py").write_text("def (:\n")
    result = subprocess.run(
        ["bash", "-c", f"set -e; . {ROOT / 'scripts' / 'lib.sh'}; compile_sources; echo started"],
        cwd=tmp_path,
        env=child_environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "started\n", "")
