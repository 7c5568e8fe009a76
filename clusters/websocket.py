"""`/ws/tasks`: the original web UI's live task progress, as an ASGI WebSocket application.

The protocol is the original's: the client sends `{"type": "subscribe",
"task_id": ...}` and gets `{"type": "subscribed", ...}`, then `{"type":
"task_update", "task": {...}}` (the TaskStatus of GET /api/tasks/ID) each time
the task's status or progress changes, the last one `completed` or `failed`;
`{"type": "ping"}` gets `{"type": "pong"}`.

Progress comes from the operation log as the reconciler writes it: every
KINDLER_WS_POLL_INTERVAL seconds the process reads the tasks its sockets
follow (Hub), from whichever database is active now, so it keeps going through
an outage and a failover (a read that meets a lost PostgreSQL falls the
instance back and is tried again at the next poll).

The handshake is authenticated as the API is: the API token in
`Authorization: Bearer`, or the session cookie from a page of this site (the
Origin is checked as Django's CSRF check does, so another site's page cannot
use a signed-in person's cookie). Anything else is refused before the socket
opens (HTTP 403). kindler.wsserver serves this on KINDLER_WS_BIND.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import uuid
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError, close_old_connections
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from clusters import api
from clusters.models import Cluster, OperationLog
from clusters.tasks import FINISHED, task_to_dict
from kindler.asgi_protocol import Receive, Scope, Send, lifespan
from kindler.db.failover.errors import describe_error
from kindler.db.failover.monitor import report_outage

PATH = "/ws/tasks"
# A subscribe is some 80 bytes; the original web UI follows a task per card.
MAX_MESSAGE_BYTES = 4096
MAX_SUBSCRIPTIONS = 100
# The WebSocket close code for a message too big to take.
MESSAGE_TOO_BIG = 1009
HTTP_SCHEMES = {"ws": "http", "wss": "https"}

logger = logging.getLogger("kindler.websocket")


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve /ws/tasks; answer 404 to plain HTTP."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "websocket":
        await tasks_socket(scope, receive, send)
    elif scope["type"] == "http":
        body = json.dumps({"detail": "Not found: this address serves the WebSocket /ws/tasks"})
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": body.encode()})


async def tasks_socket(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept an authenticated /ws/tasks handshake and follow the tasks it subscribes to."""
    if (await receive())["type"] != "websocket.connect":
        return
    client = (scope.get("client") or ("unknown",))[0]
    if scope["path"] != PATH:
        refusal: str | None = f"no WebSocket at {scope['path'][:200]!r}"
    else:
        try:
            refusal = await asyncio.to_thread(handshake_refusal, scope)
        except DatabaseError as exc:
            # No database to check the session against (PostgreSQL-only mode
            # without PostgreSQL): the client retries, as the web UI does.
            refusal = f"the session could not be checked: {describe_error(exc)}"
    if refusal is not None:
        logger.info("WebSocket from %s refused: %s", client, refusal)
        # Closed before it was accepted: the server answers the handshake 403.
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    socket = TaskSocket(send)
    hub.join(socket)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes") or ""
            if message["type"] == "websocket.receive" and not await socket.handle(raw):
                return
    finally:
        hub.leave(socket)


class _OriginCheck(CsrfViewMiddleware):
    def verified(self, request: HttpRequest) -> bool:
        # The CSRF check's own comparison (CSRF_TRUSTED_ORIGINS, subdomain
        # patterns), so the socket trusts exactly the pages the API trusts.
        return bool(self._origin_verified(request))  # type: ignore[attr-defined]


def handshake_refusal(scope: Scope) -> str | None:
    """Return why the handshake is refused, or None to accept it."""
    close_old_connections()
    try:
        try:
            return _refusal(scope)
        except DatabaseError as exc:
            if not report_outage(exc, "websocket"):
                raise
            # The instance fell back: ask the database that is active now.
            return _refusal(scope)
    finally:
        close_old_connections()


def _refusal(scope: Scope) -> str | None:
    scheme = HTTP_SCHEMES.get(str(scope.get("scheme")), "http")
    request = ASGIRequest({**scope, "method": "GET", "scheme": scheme}, io.BytesIO())
    try:
        request.get_host()
    except DisallowedHost:
        return "the Host is not in ALLOWED_HOSTS"
    if request.META.get("HTTP_AUTHORIZATION", "").partition(" ")[0].lower() == "bearer":
        answer = api.authenticate(request)
        return None if answer is None else str(json.loads(answer.content)["detail"])
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
    if not auth.get_user(request).is_authenticated:
        return "neither a signed-in session nor the API token"
    origin = request.META.get("HTTP_ORIGIN")
    if origin is None:
        return "a session cookie without an Origin"
    if not _OriginCheck(lambda request: HttpResponse()).verified(request):
        return f"a session cookie from another site ({origin[:200]})"
    return None


class TaskSocket:
    """One connection: the tasks it follows, and what it last sent for each."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._sending = asyncio.Lock()
        # task id -> the (status, progress) last sent, None before the first.
        self.following: dict[str, tuple[str, int] | None] = {}
        self.told_unknown: set[str] = set()

    async def send(self, message: dict[str, Any]) -> None:
        # The hub and the receive loop both send.
        async with self._sending:
            await self._send({"type": "websocket.send", "text": json.dumps(message)})

    async def handle(self, raw: str | bytes) -> bool:
        """Answer one client message; return False when the socket must close."""
        if len(raw) > MAX_MESSAGE_BYTES:
            await self._send({"type": "websocket.close", "code": MESSAGE_TOO_BIG})
            return False
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            await self.send({"type": "error", "detail": "Messages must be JSON objects"})
            return True
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind in ("subscribe", "unsubscribe"):
            await self.subscription(kind, data.get("task_id"))
        else:
            detail = "Unknown message type: send subscribe, unsubscribe or ping"
            await self.send({"type": "error", "detail": detail})
        return True

    async def subscription(self, kind: str, task_id: Any) -> None:
        if not isinstance(task_id, str) or not task_id:
            await self.send({"type": "error", "detail": "task_id must be a task's id"})
            return
        if kind == "unsubscribe":
            self.following.pop(task_id, None)
            await self.send({"type": "unsubscribed", "task_id": task_id})
            return
        if task_id not in self.following and len(self.following) >= MAX_SUBSCRIPTIONS:
            detail = f"At most {MAX_SUBSCRIPTIONS} tasks per connection"
            await self.send({"type": "error", "task_id": task_id, "detail": detail})
            return
        # Subscribing again sends the task's state again.
        self.following[task_id] = None
        await self.send({"type": "subscribed", "task_id": task_id})
        # The task's state now, without waiting for the next poll.
        hub.wake()

    async def tell(self, tasks: dict[str, dict[str, Any]]) -> None:
        """Send what changed among the tasks this socket follows."""
        for task_id, sent in list(self.following.items()):
            task = tasks.get(task_id)
            if task is None:
                # Kept: a failover can hide a task written a moment before.
                if task_id not in self.told_unknown:
                    self.told_unknown.add(task_id)
                    detail = f"Task {task_id} not found"
                    await self.send({"type": "error", "task_id": task_id, "detail": detail})
                continue
            state = (task["status"], task["progress"])
            if state == sent:
                continue
            await self.send({"type": "task_update", "task": task})
            if task["status"] in FINISHED:
                self.following.pop(task_id, None)
            else:
                self.following[task_id] = state


class Hub:
    """Every socket of this process, and the tasks they follow, read together.

    One poll every KINDLER_WS_POLL_INTERVAL seconds reads the version of every
    followed task in one query, and reads in full only the tasks whose version
    moved (every save of an operation raises it): the cost grows with the
    changes, not with the sockets.
    """

    def __init__(self) -> None:
        self.sockets: set[TaskSocket] = set()
        # task id -> (version, TaskStatus) as last read.
        self.cache: dict[str, tuple[int, dict[str, Any]]] = {}
        self.failing = False
        self._wake: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None

    def join(self, socket: TaskSocket) -> None:
        self.sockets.add(socket)
        if self._poller is None or self._poller.done():
            self._wake = asyncio.Event()
            self._poller = asyncio.create_task(self.follow())

    def leave(self, socket: TaskSocket) -> None:
        self.sockets.discard(socket)

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def follow(self) -> None:
        """Poll while any socket is open."""
        assert self._wake is not None
        while self.sockets:
            self._wake.clear()
            wanted = {task_id for socket in self.sockets for task_id in socket.following}
            if wanted:
                await self.poll(wanted)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), float(settings.KINDLER_WS_POLL_INTERVAL))
        self._poller = None

    async def poll(self, wanted: set[str]) -> None:
        known = {task_id: self.cache[task_id][0] for task_id in wanted if task_id in self.cache}
        try:
            versions, fresh = await asyncio.to_thread(read_tasks, known, sorted(wanted))
        except DatabaseError as exc:
            # The subscriptions stay: the next poll reads the database active then.
            report_outage(exc, "websocket")
            if not self.failing:
                logger.warning("Task progress not read: %s", describe_error(exc))
            self.failing = True
            return
        self.failing = False
        self.cache = {
            task_id: fresh.get(task_id) or self.cache[task_id]
            for task_id in versions
            if task_id in fresh or task_id in self.cache
        }
        tasks = {task_id: task for task_id, (_, task) in self.cache.items()}
        for socket in list(self.sockets):
            try:
                await socket.tell(tasks)
            except Exception:
                # A socket that went away meanwhile; its receive loop ends it.
                logger.debug("Task update not sent", exc_info=True)


hub = Hub()


def read_tasks(
    known: dict[str, int], task_ids: list[str]
) -> tuple[dict[str, int], dict[str, tuple[int, dict[str, Any]]]]:
    """Return the version of each named task that exists, and those not known at that version.

    A poll of tasks that did not change reads one small column of each.
    """
    uids = {}
    for task_id in task_ids:
        try:
            uids[uuid.UUID(task_id)] = task_id
        except ValueError:
            continue
    if not uids:
        return {}, {}
    # A request's start and end do this: drop connections a lost server broke.
    close_old_connections()
    try:
        rows = OperationLog.objects.filter(uid__in=list(uids)).values_list("uid", "version")
        versions = {uids[uid]: version for uid, version in rows}
        changed = [
            uid
            for uid, task_id in uids.items()
            if task_id in versions and known.get(task_id) != versions[task_id]
        ]
        operations = list(OperationLog.objects.filter(uid__in=changed)) if changed else []
        names = {operation.cluster_name for operation in operations}
        providers = dict(Cluster.objects.filter(name__in=names).values_list("name", "provider"))
    finally:
        close_old_connections()
    fresh = {
        uids[operation.uid]: (
            operation.version,
            task_to_dict(operation, providers.get(operation.cluster_name)),
        )
        for operation in operations
    }
    return versions, fresh
