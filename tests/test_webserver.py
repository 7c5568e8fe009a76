"""The web server: granian serving kindler.wsgi (kindler/webserver.py)."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from granian.constants import Interfaces

from kindler import webserver
from tests.conftest import BOTH, WebServer, wait_for
from tests.pgserver import free_port

TOKEN = "webserver-token-for-tests-0123456789"
GRACEFUL_TIMEOUT = 5
SERVER_STOPPED = "[INFO] Granian shutdown completed, see ya!"
ACCESS_LINE = re.compile(r'127\.0\.0\.1 - \[[^]]+\] "GET /api/health HTTP/1\.1" 200 \d+\.\dms')


@pytest.fixture
def granian_loggers() -> Iterator[None]:
    """Put back the loggers build() configures, and close the handlers it opened."""
    loggers = [logging.getLogger(name) for name in ("_granian", "granian.access")]
    saved = [(log.handlers[:], log.level, log.propagate) for log in loggers]
    yield
    for log, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        for handler in log.handlers:
            if handler not in handlers:
                handler.close()
        log.handlers[:], log.level, log.propagate = handlers, level, propagate


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:9000", ("localhost", 9000)),
        ("[::1]:8000", ("::1", 8000)),
        (":8000", ("0.0.0.0", 8000)),
    ],
)
def test_split_bind_returns_the_host_and_the_port(bind: str, expected: tuple[str, int]) -> None:
    assert webserver.split_bind(bind) == expected


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "8000", ""])
def test_split_bind_refuses_anything_but_host_and_port(bind: str) -> None:
    with pytest.raises(ValueError, match="KINDLER_BIND must be HOST:PORT") as error:
        webserver.split_bind(bind)
    assert str(error.value) == f"KINDLER_BIND must be HOST:PORT, got {bind!r}"


def test_the_access_log_goes_to_stdout_for_a_dash() -> None:
    config = webserver.logging_config(webserver.access_log_handler("-"))
    assert (config["handlers"]["access"], config["loggers"]["granian.access"]["handlers"]) == (
        {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"},
        ["access"],
    )


@pytest.mark.parametrize("target", ["off", "OFF", "none", "", " "])
def test_the_access_log_can_be_turned_off(target: str) -> None:
    assert webserver.access_log_handler(target) is None


def test_the_access_log_goes_to_a_file_for_a_path(tmp_path: Path) -> None:
    path = str(tmp_path / "access.log")
    config = webserver.logging_config(webserver.access_log_handler(path))
    assert config["handlers"]["access"] == {
        "class": "logging.FileHandler",
        "filename": path,
        "formatter": "plain",
    }


@pytest.mark.parametrize("target", ["-", "off"])
def test_the_server_messages_go_to_stderr(target: str) -> None:
    config = webserver.logging_config(webserver.access_log_handler(target))
    assert (
        config["handlers"]["server"]["stream"],
        config["loggers"]["_granian"]["handlers"],
    ) == ("ext://sys.stderr", ["server"])


def test_without_an_access_log_there_is_no_access_logger() -> None:
    config = webserver.logging_config(None)
    assert (sorted(config["handlers"]), sorted(config["loggers"])) == (["server"], ["_granian"])


@pytest.mark.usefixtures("granian_loggers")
def test_build_reads_the_defaults() -> None:
    server = webserver.build({})
    assert (
        server.target,
        server.bind_addr,
        server.bind_port,
        server.workers,
        server.blocking_threads,
        server.interface,
        server.websockets,
        server.log_access,
        server.respawn_failed_workers,
        server.workers_kill_timeout,
    ) == (
        "kindler.asgi:application",
        "127.0.0.1",
        8000,
        2,
        1,
        Interfaces.ASGI,
        False,
        True,
        True,
        10,
    )


@pytest.mark.usefixtures("granian_loggers")
def test_build_reads_every_setting_from_the_environment(tmp_path: Path) -> None:
    server = webserver.build(
        {
            "KINDLER_BIND": "0.0.0.0:9001",
            "KINDLER_WORKERS": "3",
            "KINDLER_THREADS": "8",
            "KINDLER_BODY_TIMEOUT": "2.5",
            "KINDLER_ACCESS_LOG": str(tmp_path / "access.log"),
            "KINDLER_GRACEFUL_TIMEOUT": "20",
        }
    )
    assert (
        server.bind_addr,
        server.bind_port,
        server.workers,
        server.interface,
        server.log_access,
        server.workers_kill_timeout,
    ) == ("0.0.0.0", 9001, 3, Interfaces.ASGI, True, 20)


@pytest.mark.usefixtures("granian_loggers")
def test_build_turns_the_access_log_off() -> None:
    assert webserver.build({"KINDLER_ACCESS_LOG": "off"}).log_access is False


@pytest.mark.parametrize("name", ["KINDLER_WORKERS", "KINDLER_THREADS", "KINDLER_GRACEFUL_TIMEOUT"])
def test_build_refuses_a_number_that_is_not_whole(name: str) -> None:
    with pytest.raises(ValueError, match="must be a whole number") as error:
        webserver.build({name: "2.5"})
    assert str(error.value) == f"{name} must be a whole number, got '2.5'"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan", ""])
def test_build_refuses_a_body_timeout_that_is_not_positive_seconds(value: str) -> None:
    with pytest.raises(ValueError, match="KINDLER_BODY_TIMEOUT") as error:
        webserver.build({"KINDLER_BODY_TIMEOUT": value})
    assert str(error.value) == (
        f"KINDLER_BODY_TIMEOUT must be a number of seconds above 0, got {value!r}"
    )


def start_with_bind(bind: str) -> tuple[int, str, str]:
    """Run the server with KINDLER_BIND=bind until it stops; return its status, stdout, stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "kindler.webserver"],
        env={**os.environ, "KINDLER_BIND": bind},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout, result.stderr


def test_a_bad_bind_stops_the_server_with_one_line() -> None:
    assert start_with_bind("localhost") == (
        1,
        "",
        "kindler.webserver: KINDLER_BIND must be HOST:PORT, got 'localhost'\n",
    )


def test_a_port_in_use_stops_the_server_with_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        stopped = start_with_bind(f"127.0.0.1:{port}")
    assert stopped == (
        1,
        "",
        f"kindler.webserver: cannot listen on 127.0.0.1:{port}: Address already in use\n",
    )


@pytest.fixture
def served(start_web_server: Callable[..., WebServer], tmp_path: Path) -> WebServer:
    """A web server that answers, with its access log in a file."""
    server = start_web_server(
        KINDLER_API_TOKEN=TOKEN,
        KINDLER_ACCESS_LOG=str(tmp_path / "access.log"),
        KINDLER_GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT),
    )
    wait_for(server.answers)
    return server


def health_lines(access_log: Path) -> list[str]:
    """Return the access log's lines for a GET /api/health answered with 200."""
    return [line for line in access_log.read_text().splitlines() if ACCESS_LINE.fullmatch(line)]


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_access_log_file_gets_a_line_per_request(served: WebServer, tmp_path: Path) -> None:
    assert served.get("/api/health", TOKEN)[0] == 200
    # A line is written once the answer is sent: it may land just after the
    # client has it.
    wait_for(lambda: health_lines(tmp_path / "access.log"))
    assert len(health_lines(tmp_path / "access.log")) == 1


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_access_log_never_holds_the_token(served: WebServer, tmp_path: Path) -> None:
    assert served.get("/api/health", TOKEN)[0] == 200
    wait_for(lambda: health_lines(tmp_path / "access.log"))
    assert TOKEN not in (tmp_path / "access.log").read_text()


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_sigterm_stops_the_server_within_the_graceful_timeout(served: WebServer) -> None:
    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    status = served.process.wait(timeout=GRACEFUL_TIMEOUT + 5)
    assert (status, time.monotonic() - started < GRACEFUL_TIMEOUT) == (0, True)


# A SIGTERM that reaches a new worker before its first line of Python, as the
# main process's stop does when it comes the moment a worker is forked: the
# hook registered first stands in for it.
SIGTERM_AT_FORK = """
import os, signal, sys, time
from kindler import webserver

taken = []
signal.signal(signal.SIGTERM, lambda *_: taken.append("main"))  # as granian's main process
os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
webserver.hold_stop_signals_across_fork()
pid = os.fork()
if pid == 0:
    time.sleep(10)
    os._exit(0)
_, status = os.waitpid(pid, 0)
blocked = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))
os.kill(os.getpid(), signal.SIGTERM)
print(os.waitstatus_to_exitcode(status), blocked, taken)
"""


def test_a_sigterm_at_fork_ends_the_worker_and_leaves_the_main_process_its_handler() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_AT_FORK],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=settings.BASE_DIR,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "-15 [] ['main']\n", "")


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_sigterm_stops_workers_still_loading_django_at_once(
    start_web_server: Callable[..., WebServer],
) -> None:
    server = start_web_server(KINDLER_GRACEFUL_TIMEOUT="30")
    # Loading Django takes a worker about a second; it is signalled before.
    wait_for(lambda: len(server.workers()) == 2, every=0.01)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    status = server.process.wait(timeout=40)
    assert (status, time.monotonic() - started < 5) == (0, True)


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_to_the_group_stops_serve_at_once_when_idle(
    kindler_env: dict[str, str], stop: signal.Signals
) -> None:
    # KINDLER_GRACEFUL_TIMEOUT=0 waits for the workers without a limit: one
    # that never acts on the stop would hang serve until the timeout below.
    port, ws_port = free_port(), free_port()
    env = {
        **kindler_env,
        "KINDLER_BIND": f"127.0.0.1:{port}",
        "KINDLER_WS_BIND": f"127.0.0.1:{ws_port}",
        "KINDLER_GRACEFUL_TIMEOUT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    serve = subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = WebServer(serve, port, Path(str(settings.DATABASES["sqlite"]["NAME"]) + ".metrics"))
    started: list[str] = []
    try:
        assert serve.stdout is not None
        while not started or not started[-1].startswith("Reconciling the clusters"):
            line = serve.stdout.readline()
            assert line, "serve ended before the reconciler started:\n" + "\n".join(started)
            started.append(line.decode().rstrip("\n"))
        wait_for(server.answers, seconds=60)
        # The WebSocket server's worker too has loaded Django and put in
        # granian's handlers: a worker signalled before that simply ends.
        wait_for(lambda: http_status(ws_port) is not None, seconds=60)
        # The way a terminal delivers Ctrl-C: to every process of the group at once.
        os.killpg(serve.pid, stop)
        rest, _ = serve.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
        serve.wait()
    lines = [*started, *rest.decode().splitlines()]
    refused = [line for line in lines if "refused to gracefully stop" in line]
    ends = sorted(line for line in lines if line in (SERVER_STOPPED, "Reconciler stopped."))
    # granian's last line twice: the web server and the WebSocket server.
    stopped = ["Reconciler stopped.", SERVER_STOPPED, SERVER_STOPPED]
    assert (serve.returncode, refused, ends) == (0, [], stopped)


def http_status(port: int) -> int | None:
    """Return the status a plain GET / on port answers, or None while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()
