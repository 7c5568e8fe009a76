"""Status sections apps add to /api/health, `dbstatus` and the System page.

kindler imports no app. An app registers a reader in its AppConfig.ready();
each reader returns one Section, read when a page or command asks, and every
rendering shows that one value: its data under its key in /api/health and
`dbstatus --json`, its lines in `dbstatus` and on the System page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

logger = logging.getLogger("kindler.sections")


@dataclass(frozen=True)
class Section:
    """One app's status, in every form the status pages show."""

    key: str
    title: str
    # JSON data for signed-in callers and the API token (anonymous callers
    # of /api/health see only whether Kindler is healthy).
    data: Any
    lines: tuple[str, ...] = field(default=())


Reader = Callable[[], Section]
_readers: list[Reader] = []


def register(reader: Reader) -> None:
    """Add a section to the status pages (once, however often ready() runs)."""
    if reader not in _readers:
        _readers.append(reader)


def read_sections() -> list[Section]:
    """Read every registered section now; one whose database cannot answer is left out."""
    found = []
    for reader in _readers:
        try:
            found.append(reader())
        except DatabaseError as exc:
            logger.info("Status section %s unavailable: %s", reader.__qualname__, exc)
    return found
