"""Which Patroni member the node Kindler writes to is, asked of Patroni's REST API.

HAProxy in front of Patroni hides the nodes' names and PostgreSQL does not
know them. With KINDLER_PATRONI_API set (the members' REST addresses,
comma-separated), health, dbstatus and the System page name the member
whose address is the node's (inet_server_addr():port), or else the leader
on the node's timeline. GET /cluster is asked of the first address that
answers, within PATRONI_TIMEOUT each, and the answer is kept for
CACHE_SECONDS: a health check never waits on Patroni more than once in that
time. An API that does not answer names no member; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.request
from typing import Any

from django.conf import settings

from kindler.db.sync.identity import Node

PATRONI_TIMEOUT = 0.5
CACHE_SECONDS = 5.0

_lock = threading.Lock()
_asked: dict[tuple[str, ...], tuple[float, list[dict[str, Any]]]] = {}


def named(node: Node | None) -> Node | None:
    """Return node with its Patroni member's name, when KINDLER_PATRONI_API can tell it."""
    if node is None:
        return None
    urls = tuple(
        u.strip().rstrip("/") for u in settings.KINDLER_PATRONI_API.split(",") if u.strip()
    )
    if not urls:
        return node
    return dataclasses.replace(node, member=member(members(urls), node))


def member(members: list[dict[str, Any]], node: Node) -> str | None:
    """Return the name of the member serving node: by address, else the leader of its timeline."""
    for entry in members:
        if f"{entry.get('host')}:{entry.get('port')}" == node.server:
            return str(entry.get("name"))
    for entry in members:
        if entry.get("role") == "leader" and entry.get("timeline") == node.timeline:
            return str(entry.get("name"))
    return None


def members(urls: tuple[str, ...]) -> list[dict[str, Any]]:
    """Return the cluster's members as the first answering API lists them (kept a while)."""
    now = time.monotonic()
    with _lock:
        kept = _asked.get(urls)
        if kept is not None and now - kept[0] < CACHE_SECONDS:
            return kept[1]
    found: list[dict[str, Any]] = []
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url}/cluster", timeout=PATRONI_TIMEOUT) as answer:
                found = list(json.load(answer).get("members") or [])
            break
        except (OSError, ValueError, AttributeError):
            continue
    with _lock:
        _asked[urls] = (now, found)
    return found


def forget() -> None:
    """Ask Patroni again on the next call (tests change KINDLER_PATRONI_API)."""
    with _lock:
        _asked.clear()
