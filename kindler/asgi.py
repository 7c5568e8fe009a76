"""ASGI entry point: granian serves this; it runs kindler.wsgi once a request's body is in.

granian's WSGI interface reads a request's body inside the request thread,
with no time limit: a few clients that announce a body and never send it hold
every thread, and nobody else is answered. Here the body is received on the
worker's event loop, where a waiting client costs a socket and no thread; a
body not received within KINDLER_BODY_TIMEOUT seconds is answered 408 and the
connection closed. Only a complete request reaches one of the KINDLER_THREADS
threads that run Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any

from django.conf import settings

from kindler.asgi_protocol import Message, Receive, Scope, Send, lifespan
from kindler.wsgi import django_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kindler.settings")


TIMED_OUT = b"The request body was not received in time.\n"
TOO_LARGE = b"The request body is too large.\n"

Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class RequestThreads:
    """The threads that run Django; the thread idle the shortest takes the next request.

    A thread that just answered is still warm on its CPU. concurrent.futures'
    pool wakes its idle threads in turn instead, each from a longer sleep: on
    a 2-core machine that cost GET /api/clusters/<name> about 0.1 ms at one
    client at a time and a fifth of the reads per second at 8 clients
    (docs/performance.md). Threads start as requests need them, up to count;
    with all busy, a request waits for the first that is free.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._mutex = threading.Lock()
        self._idle: list[RequestThread] = []
        self._waiting: deque[Job] = deque()
        self._started = 0

    def run(
        self, loop: asyncio.AbstractEventLoop, function: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        """Run function(*args) in one of the threads; return the future of its result on loop."""
        future: asyncio.Future[Any] = loop.create_future()
        job: Job = (function, args, loop, future)
        with self._mutex:
            if self._idle:
                self._idle.pop().hand(job)
                return future
            if self._started == self.count:
                self._waiting.append(job)
                return future
            self._started += 1
            number = self._started
        RequestThread(self, job, f"request_{number}").start()
        return future

    def next_job(self, thread: RequestThread) -> Job | None:
        """Return the request that waits the longest, or None after marking thread idle."""
        with self._mutex:
            if self._waiting:
                return self._waiting.popleft()
            self._idle.append(thread)
            return None


class RequestThread(threading.Thread):
    """One thread of RequestThreads: runs a job, then the next, or sleeps until handed one."""

    def __init__(self, threads: RequestThreads, job: Job, name: str) -> None:
        # A daemon: granian lets the requests in flight end before a worker exits.
        super().__init__(name=name, daemon=True)
        self.threads = threads
        self.job: Job | None = job
        self.handed = threading.Lock()
        self.handed.acquire()

    def hand(self, job: Job) -> None:
        """Give this idle thread job and wake it."""
        self.job = job
        self.handed.release()

    def run(self) -> None:
        job = self.job
        while True:
            if job is None:
                self.handed.acquire()
                job = self.job
            # Nothing of a request is kept while the thread sleeps.
            self.job = None
            assert job is not None
            deliver = perform(job)
            # Idle (or given the request waiting longest) before the answer goes
            # out: the request that answer lets the loop start finds this
            # thread, the warmest, free.
            job = self.threads.next_job(self)
            deliver()


def perform(job: Job) -> Callable[[], None]:
    """Run job; return what settles its future on its loop (a cancelled job is not run)."""
    function, args, loop, future = job
    if future.cancelled():
        return _nothing
    result: Any = None
    error: BaseException | None = None
    try:
        result = function(*args)
    except BaseException as raised:  # the awaiting request raises it
        error = raised

    def deliver() -> None:
        # A closed loop raises RuntimeError: nobody waits for the answer then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settled, future, result, error)

    return deliver


def _nothing() -> None:
    """Deliver nothing: the job was cancelled before it ran."""


def settled(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Give future its result or error, unless it was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# Started in the worker on its first request, after the fork.
_threads: RequestThreads | None = None


def threads() -> RequestThreads:
    """Return the worker's request threads (started as requests need them)."""
    global _threads
    if _threads is None:
        _threads = RequestThreads(int(settings.KINDLER_THREADS))
    return _threads


class BodyTooLarge(Exception):
    """A body without Content-Length grew past DATA_UPLOAD_MAX_MEMORY_SIZE."""


class ClientGone(Exception):
    """The client went away before its body was in: nobody would read an answer."""


def announced_length(scope: Scope) -> int | None:
    """Return the request's Content-Length as a number, or None without a usable one."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def has_body(scope: Scope) -> bool:
    """Return True unless the request's headers say it has no body (HTTP/1.1's framing)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


async def receive_body(receive: Receive, announced: int | None) -> bytes:
    """Return the whole request body; raise BodyTooLarge past the upload limit, or ClientGone."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and announced is not None and announced > limit:
        # Django refuses the request on its Content-Length alone; what the
        # client would send is never wanted.
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def wsgi_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """Return the WSGI environ of an ASGI HTTP request whose body is body."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        # WSGI carries the path's bytes as latin-1 characters (PEP 3333).
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": str(client[0]),
        "GATEWAY_INTERFACE": "CGI/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ","
            value = f"{environ[key]}{separator}{value}"
        environ[key] = value
    return environ


class Answer:
    """What the WSGI application answered: status, headers, and the body if it is whole."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        """Keep the status and the headers (the WSGI start_response)."""
        self.status = int(status.split(" ", 1)[0])
        self.headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        return self.write

    def write(self, data: bytes) -> None:
        """Refuse the legacy write() callable: Django never uses it."""
        raise NotImplementedError("write() is not supported")


def run_application(
    environ: dict[str, Any], loop: asyncio.AbstractEventLoop, send: Send
) -> Answer | None:
    """Run Django on environ in this thread; return the answer, or None once it was streamed."""
    answer = Answer()
    result: Iterable[bytes] = django_application(environ, answer.start_response)
    try:
        if getattr(result, "streaming", False):
            stream_answer(answer, result, loop, send)
            return None
        answer.body = b"".join(result)
        return answer
    finally:
        # Django's request_finished (closing this thread's connections) runs here.
        close = getattr(result, "close", None)
        if close is not None:
            close()


def stream_answer(
    answer: Answer, result: Iterable[bytes], loop: asyncio.AbstractEventLoop, send: Send
) -> None:
    """Send a streaming answer chunk by chunk from this thread through the loop."""

    async def sent(message: Message) -> None:
        # granian's send() returns an awaitable that is not a coroutine.
        await send(message)

    def deliver(message: Message) -> None:
        asyncio.run_coroutine_threadsafe(sent(message), loop).result()

    start = {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
    deliver(start)
    for chunk in result:
        if chunk:
            deliver({"type": "http.response.body", "body": chunk, "more_body": True})
    deliver({"type": "http.response.body", "body": b"", "more_body": False})


async def refuse(send: Send, status: int, text: bytes) -> None:
    """Answer status with text and close the connection."""
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """Receive the request's body within KINDLER_BODY_TIMEOUT, then let Django answer it."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    try:
        # Most requests (GET) have no body: nothing to wait for.
        body = b""
        if has_body(scope):
            async with asyncio.timeout(float(settings.KINDLER_BODY_TIMEOUT)):
                body = await receive_body(receive, announced_length(scope))
    except TimeoutError:
        await refuse(send, 408, TIMED_OUT)
        return
    except BodyTooLarge:
        await refuse(send, 413, TOO_LARGE)
        return
    except ClientGone:
        return
    loop = asyncio.get_running_loop()
    environ = wsgi_environ(scope, body)
    answer = await threads().run(loop, run_application, environ, loop, send)
    if answer is None:
        return
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
    await send({"type": "http.response.body", "body": answer.body})
