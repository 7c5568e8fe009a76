"""Running a provider's CLI (clusters/drivers/base.py): streaming, deadlines, process groups."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from clusters.drivers.base import Command, last_line, run
from tests.conftest import wait_for
from tests.fakes import FakeTools

CREATE = Command(("k3d", "cluster", "create", "dev"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes: it runs nothing any more.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_successful_command_returns_its_output_and_status(fakes: FakeTools) -> None:
    result = run(CREATE, timeout=30)
    assert (result.ok, result.exit_code) == (True, 0)
    assert result.output.splitlines()[-1] == "kubectl cluster-info --context k3d-dev"


def test_stderr_is_merged_into_the_output(
    fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_FAIL", "create")
    result = run(CREATE, timeout=30)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "FATA[0002] Cluster creation FAILED, all changes have been rolled back!"
    )


def test_output_arrives_while_the_command_still_runs(
    fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_SLEEP", "2")
    seen_while_running: list[str] = []

    def on_output(chunk: str) -> None:
        if chunk and "dev" not in fakes.clusters():
            seen_while_running.append(chunk)

    run(CREATE, timeout=30, on_output=on_output, poll_interval=0.05)
    assert "".join(seen_while_running).splitlines()[0] == "INFO[0000] Prep: Network"


def test_stdin_is_given_to_the_command(fakes: FakeTools) -> None:
    command = Command(("kind", "create", "cluster", "--name", "dev", "--config", "-"), "a: b\n")
    assert run(command, timeout=30).ok
    assert fakes.stdin_of(["kind", "create"]) == "a: b\n"


def test_a_missing_binary_is_a_result_not_an_exception(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = run(CREATE, timeout=30)
    assert (result.missing, result.ok, result.exit_code) == (True, False, None)


def test_the_timeout_kills_the_whole_process_group(
    fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_SLEEP", "60")
    monkeypatch.setenv("KINDLER_FAKE_CHILD", "1")
    result = run(CREATE, timeout=1.5)
    assert (result.timed_out, result.exit_code) == (True, None)
    assert wait_for(lambda: not alive(fakes.child_pid()), seconds=5)


def test_a_stop_request_ends_the_command_and_its_children(
    fakes: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KINDLER_FAKE_SLEEP", "60")
    monkeypatch.setenv("KINDLER_FAKE_CHILD", "1")
    asked = time.monotonic() + 1.0
    result = run(CREATE, timeout=60, should_stop=lambda: time.monotonic() > asked)
    assert (result.interrupted, result.timed_out, result.exit_code) == (True, False, None)
    assert wait_for(lambda: not alive(fakes.child_pid()), seconds=5)


def test_display_quotes_arguments_for_a_shell() -> None:
    assert Command(("docker", "ps", "--format", "{{.Names}} x")).display() == (
        "docker ps --format '{{.Names}} x'"
    )


def test_last_line_leaves_out_terminal_escapes() -> None:
    assert last_line("ok\n\x1b[31mFATA\x1b[0m[0000] no docker\x1b]0;x\x07\n") == (
        "FATA[0000] no docker"
    )


def test_output_past_the_limit_keeps_its_beginning_and_end_and_counts_the_rest() -> None:
    # 1,000 lines of 100 characters (with the line break) against a 10,000 limit.
    script = 'i=0; while [ $i -lt 1000 ]; do printf "%099d\\n" $i; i=$((i+1)); done'
    result = run(Command(("sh", "-c", script)), timeout=30, output_limit=10_000)
    lines = result.output.splitlines()
    assert lines[:50] == [f"{i:099d}" for i in range(50)]
    assert lines[50] == "[... 90000 characters of output omitted ...]"
    assert lines[51:] == [f"{i:099d}" for i in range(950, 1000)]


def test_output_delivered_between_two_polls_is_bounded_too() -> None:
    chunks: list[str] = []
    script = "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo end"
    result = run(
        Command(("sh", "-c", script)),
        timeout=60,
        on_output=chunks.append,
        poll_interval=1.0,
        output_limit=10_000,
    )
    # The limit, and a line saying how much was left out.
    assert max(len(chunk) for chunk in chunks) <= 10_100
    assert "".join(chunks).endswith("x\nend\n")
    assert result.output == (
        "x" * 5000 + "\n[... 4990005 characters of output omitted ...]\n" + "x" * 4995 + "\nend\n"
    )
