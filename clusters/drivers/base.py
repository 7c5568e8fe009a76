"""Run a provider's CLI: streamed output, a deadline, and the whole process group killed."""

from __future__ import annotations

import codecs
import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clusters.drivers.environment import child_environment

# A process asked to stop (SIGTERM) gets this long before SIGKILL.
KILL_GRACE_SECONDS = 2.0
# After the command exits, how long its stray children may keep the output open.
DRAIN_SECONDS = 1.0
LIST_TIMEOUT_SECONDS = 30.0
# The output of one command kept in memory: its first and last halves of this
# many characters, and a count of what fell between.
OUTPUT_LIMIT_CHARS = 256 * 1024


@dataclass(frozen=True)
class ClusterStatus:
    """What a provider reports about one cluster."""

    name: str
    state: str  # an ActualState value: running, stopped, absent, ...
    nodes_ready: int
    nodes_total: int


class DriverError(Exception):
    """A provider's CLI could not say what it has (missing, failed, unreadable output)."""


@dataclass(frozen=True)
class Command:
    """A command line to run, with what to give it on stdin."""

    argv: tuple[str, ...]
    stdin: str | None = None

    @property
    def binary(self) -> str:
        return self.argv[0]

    def display(self) -> str:
        """Return the command line as a person would type it in a shell."""
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Result:
    """How a command ended."""

    exit_code: int | None
    output: str
    stderr: str = ""
    timed_out: bool = False
    interrupted: bool = False
    missing: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.interrupted or self.missing)


# CSI (colours, cursor moves), OSC (window titles, links), two-character
# escapes, then any other control character but tab and line breaks.
TERMINAL_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-_]"
    r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
)


def strip_escapes(text: str) -> str:
    """Return text without terminal escape sequences or control characters."""
    return TERMINAL_ESCAPES.sub("", text)


def not_found(binary: str) -> str:
    return f"{binary} not found on PATH"


class Driver:
    """One provider's command lines, and what it reports about its clusters."""

    provider: str = ""
    binary: str = ""

    def create(self, cluster: Any, timeout: float) -> Command:
        raise NotImplementedError

    def delete(self, cluster: Any) -> Command:
        raise NotImplementedError

    def start(self, cluster: Any) -> Command:
        raise NotImplementedError

    def stop(self, cluster: Any) -> Command:
        raise NotImplementedError

    def list_clusters(self) -> dict[str, ClusterStatus]:
        """Return every cluster the provider knows, by name; raise DriverError if it cannot."""
        raise NotImplementedError

    def server_ip(self, name: str) -> str | None:
        """Return the address of the cluster's server node, None when it has none now.

        Raise DriverError when the provider cannot say.
        """
        raise NotImplementedError

    def command_for(self, operation: str, cluster: Any, timeout: float) -> Command:
        """Return the command line that performs operation on cluster."""
        if operation == "create":
            return self.create(cluster, timeout)
        if operation in ("delete", "start", "stop"):
            method: Callable[[Any], Command] = getattr(self, operation)
            return method(cluster)
        raise ValueError(f"{self.provider} has no {operation} operation")

    def status(self, name: str) -> ClusterStatus:
        """Return what the provider says about one cluster (absent when it does not know it)."""
        return self.list_clusters().get(name, ClusterStatus(name, "absent", 0, 0))


def ipv4_or_none(value: Any) -> str | None:
    """Return value as an IPv4 address, None when empty; raise DriverError when it is neither."""
    if value in (None, ""):
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError):
        raise DriverError(f"{value!r} is not an IPv4 address") from None


def seconds(value: float) -> str:
    """Return a Go duration string, as k3d and kind flags take them (300s)."""
    return f"{round(value)}s"


def capture(argv: tuple[str, ...], timeout: float = LIST_TIMEOUT_SECONDS) -> str:
    """Run a listing command and return its stdout; raise DriverError when it fails."""
    result = run(Command(argv), timeout=timeout, merge_stderr=False)
    if result.missing:
        raise DriverError(not_found(argv[0]))
    if result.timed_out:
        raise DriverError(f"{shlex.join(argv)} did not finish within {timeout:g} s")
    if result.exit_code != 0:
        detail = last_line(result.stderr) or last_line(result.output)
        raise DriverError(
            f"{shlex.join(argv)} exited with status {result.exit_code}"
            + (f": {detail}" if detail else "")
        )
    return result.output


def last_line(text: str) -> str:
    """Return the last non-blank line of text, stripped."""
    for line in reversed(strip_escapes(text).splitlines()):
        if line.strip():
            return line.strip()
    return ""


def run(
    command: Command,
    *,
    timeout: float,
    on_output: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_interval: float = 0.2,
    merge_stderr: bool = True,
    env: dict[str, str] | None = None,
    output_limit: int = OUTPUT_LIMIT_CHARS,
) -> Result:
    """Run command in its own process group, passing output to on_output as it comes.

    on_output is called from this thread about every poll_interval, with the
    text that arrived since the last call (possibly empty).

    When the deadline passes or should_stop() turns true, the whole group is
    terminated (SIGTERM, then SIGKILL after a grace period), so nothing the
    command started outlives it. A binary missing from PATH is a Result, not
    an exception. The command gets env, by default child_environment(): never
    Kindler's secrets. Its output is kept to output_limit characters, the
    beginning and the end, both in the Result and between two on_output calls.
    """
    env = child_environment() if env is None else env
    path = shutil.which(command.binary, path=env.get("PATH"))
    if path is None:
        return Result(exit_code=None, output="", missing=True)
    process = subprocess.Popen(
        [path, *command.argv[1:]],
        stdin=subprocess.PIPE if command.stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    stdout = _Reader(process.stdout, output_limit)
    stderr = _Reader(process.stderr, output_limit) if not merge_stderr else None
    if command.stdin is not None:
        threading.Thread(target=_feed, args=(process.stdin, command.stdin), daemon=True).start()
    deadline = time.monotonic() + timeout
    timed_out = interrupted = False
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, min(poll_interval, deadline - time.monotonic())))
        if on_output is not None:
            _deliver(stdout, on_output)
        if process.returncode is not None:
            break
        if should_stop is not None and should_stop():
            interrupted = True
            break
        if time.monotonic() >= deadline:
            timed_out = True
            break
    if timed_out or interrupted:
        kill_group(process)
    # Children that inherited the output pipe keep it open after the command
    # exits; give them a moment, then end the whole group.
    stdout.join(DRAIN_SECONDS)
    if stdout.alive():
        _kill_group_now(process.pid)
        stdout.join(DRAIN_SECONDS)
    if stderr is not None:
        stderr.join(DRAIN_SECONDS)
    if on_output is not None:
        _deliver(stdout, on_output)
    return Result(
        exit_code=None if (timed_out or interrupted) else process.returncode,
        output=stdout.text(),
        stderr=stderr.text() if stderr is not None else "",
        timed_out=timed_out,
        interrupted=interrupted,
    )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group, then SIGKILL it if it is still there after the grace."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE_SECONDS)
    _kill_group_now(process.pid)
    process.wait()


def _kill_group_now(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _feed(pipe: Any, text: str) -> None:
    try:
        pipe.write(text.encode())
        pipe.close()
    except (BrokenPipeError, OSError):
        pass


def _deliver(reader: _Reader, on_output: Callable[[str], None]) -> None:
    # Called on every poll, with "" when nothing came: a writer that saves
    # periodically gets its chance to save what it still holds.
    on_output(reader.take_new())


class ClippedText:
    """Text that keeps its first and last limit/2 characters and counts what fell between."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = ""
        self.tail = ""
        self.omitted = 0

    def append(self, text: str) -> None:
        if len(self.head) < self.head_limit:
            room = self.head_limit - len(self.head)
            self.head, text = self.head + text[:room], text[room:]
        if not text:
            return
        tail = self.tail + text
        excess = len(tail) - self.tail_limit
        if excess > 0:
            self.omitted += excess
            tail = tail[excess:]
        self.tail = tail

    def text(self) -> str:
        if not self.omitted:
            return self.head + self.tail
        marker = f"[... {self.omitted} characters of output omitted ...]"
        head = self.head if self.head.endswith("\n") else self.head + "\n"
        return f"{head}{marker}\n{self.tail}"


class _Reader:
    """Read a pipe to its end in a thread, keeping the start and end of all and of what is new."""

    def __init__(self, pipe: Any, limit: int) -> None:
        self._pipe = pipe
        self._limit = limit
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._all = ClippedText(limit)
        self._new = ClippedText(limit)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fd = self._pipe.fileno()
        while True:
            data = os.read(fd, 65536)
            text = self._decoder.decode(data, final=not data)
            with self._lock:
                self._all.append(text)
                self._new.append(text)
            if not data:
                break
        self._pipe.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def text(self) -> str:
        with self._lock:
            return self._all.text()

    def take_new(self) -> str:
        with self._lock:
            new, self._new = self._new.text(), ClippedText(self._limit)
        return new
