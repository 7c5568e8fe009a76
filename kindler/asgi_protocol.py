"""What Kindler's two ASGI applications share: ASGI's types and the lifespan answer.

kindler.asgi (the HTTP front) and clusters.websocket (/ws/tasks) both import
this; neither imports the other, since kindler.asgi loads Django's WSGI
application when imported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge the server's startup and shutdown: there is nothing to prepare."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
