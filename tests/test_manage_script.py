"""scripts/manage runs manage.py with .venv's Python, from any folder."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.environment import child_environ

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "scripts" / "manage"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = child_environ()
    env.pop("VIRTUAL_ENV", None)
    # Not .venv's interpreter: the system's Python must not be the one that runs manage.py.
    env["PATH"] = "/usr/bin:/bin"
    env["SQLITE_PATH"] = str(tmp_path / "kindler.db")
    return subprocess.run(
        [str(MANAGE), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_it_runs_manage_py_with_the_venvs_python_from_another_folder(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    listed = run(tmp_path, "cluster", "list", "--json")
    assert (listed.returncode, json.loads(listed.stdout)) == (0, [])


def test_a_refused_command_keeps_its_exit_status(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    shown = run(tmp_path, "cluster", "show", "missing")
    assert (shown.returncode, shown.stdout) == (1, "")
    assert shown.stderr.splitlines()[-1] == "CommandError: No cluster named missing."


def test_a_command_before_the_first_migrate_migrates_the_instances_file(tmp_path: Path) -> None:
    listed = run(tmp_path, "cluster", "list", "--json")
    assert (listed.returncode, json.loads(listed.stdout)) == (0, [])
    assert f"Migrating this instance's SQLite file {tmp_path / 'kindler.db'} up to " in (
        listed.stderr
    )
