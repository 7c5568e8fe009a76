"""The operation log of an action: its output as it grows, and how it ended.

Writes go wherever the router sends them now and find the row by uid, so an
operation that started on PostgreSQL can finish on the SQLite fallback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, router, transaction
from django.utils import timezone

from clusters.drivers import Command
from clusters.drivers.base import strip_escapes
from clusters.models import (
    ActualState,
    Cluster,
    DesiredState,
    Operation,
    OperationLog,
    OperationStatus,
)

MAX_LOG_CHARS = 200_000
LOG_HEAD_CHARS = 20_000
TARGET_STATE: dict[str, str] = {
    Operation.CREATE: ActualState.RUNNING,
    Operation.START: ActualState.RUNNING,
    Operation.STOP: ActualState.STOPPED,
    Operation.DELETE: ActualState.ABSENT,
}


class OutputBuffer:
    """An operation's output, capped: the start and the latest part are kept."""

    def __init__(self, header: str = "", limit: int = MAX_LOG_CHARS) -> None:
        self.header = header
        self.limit = limit
        self._head: str | None = None
        self._body = ""
        self._omitted = 0

    def append(self, text: str) -> None:
        self._body += text
        if self._head is None:
            if len(self._body) <= self.limit:
                return
            self._head, self._body = self._body[:LOG_HEAD_CHARS], self._body[LOG_HEAD_CHARS:]
        excess = len(self._body) - (self.limit - LOG_HEAD_CHARS)
        if excess > 0:
            self._omitted += excess
            self._body = self._body[excess:]

    def text(self) -> str:
        """Return the output as stored: without terminal escapes, which k3d prints in colour."""
        if self._head is None:
            return strip_escapes(self.header + self._body)
        marker = f"\n[... {self._omitted} characters of output omitted ...]\n"
        return strip_escapes(self.header + self._head + marker + self._body)


@dataclass
class Outcome:
    """Everything an action's end writes: its operation log and the cluster's state."""

    log_uid: Any
    cluster_uid: Any
    cluster_name: str
    operation: str
    command: str
    started_at: datetime
    status: str
    output: str
    error: str = ""
    exit_code: int | None = None
    completed_at: datetime = field(default_factory=timezone.now)
    hooks: str | None = None  # the hooks' results as JSON text
    # The server node's address, seen after a create or a start succeeded.
    server_ip: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == OperationStatus.SUCCESS

    def log_fields(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "status": self.status,
            "log_output": self.output,
            "error_message": self.error,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "hooks": self.hooks,
        }

    def cluster_fields(self) -> dict[str, Any]:
        fields = {
            "actual_state": TARGET_STATE[self.operation] if self.succeeded else ActualState.FAILED,
            "reconcile_error": "" if self.succeeded else self.error,
            "last_reconciled_at": self.completed_at,
        }
        if self.server_ip is not None:
            fields["server_ip"] = self.server_ip
        return fields


def write_log(alias: str, outcome: Outcome, fields: dict[str, Any]) -> None:
    """Update the operation log by uid on alias, or insert it there with that uid."""
    logs = OperationLog.objects.using(alias)
    if not logs.filter(uid=outcome.log_uid).update(**fields):
        OperationLog(
            uid=outcome.log_uid,
            cluster_name=outcome.cluster_name,
            operation=outcome.operation,
            **{**outcome.log_fields(), **fields},
        ).save(using=alias)


def write_outcome(alias: str, outcome: Outcome) -> None:
    """Record how an action ended: its log, and the cluster's state (or its removal)."""
    with transaction.atomic(using=alias):
        write_log(alias, outcome, outcome.log_fields())
        clusters = Cluster.objects.using(alias).filter(uid=outcome.cluster_uid)
        if outcome.succeeded and outcome.operation == Operation.DELETE:
            # The row goes once the provider has deleted the cluster; its
            # operation history stays, keyed by name. Someone who asked for
            # the cluster again meanwhile keeps it (and gets it recreated).
            deleted, _ = clusters.filter(desired_state=DesiredState.ABSENT).delete()
            if deleted:
                return
        clusters.update(**outcome.cluster_fields())


class LogWriter:
    """Save a running operation's output every flush interval, wherever writes go now."""

    def __init__(
        self,
        outcome: Outcome,
        buffer: OutputBuffer,
        on_error: Callable[[DatabaseError], object],
    ) -> None:
        self.on_error = on_error
        self.outcome = outcome
        self.buffer = buffer
        self.interval = float(settings.KINDLER_LOG_FLUSH_INTERVAL)
        self._saved_at = time.monotonic()
        self._dirty = False

    def feed(self, chunk: str) -> None:
        if chunk:
            self.buffer.append(chunk)
            self._dirty = True
        if self._dirty and time.monotonic() - self._saved_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        self._saved_at, self._dirty = time.monotonic(), False
        alias = router.db_for_write(OperationLog)
        try:
            write_log(alias, self.outcome, {"log_output": self.buffer.text()})
        except DatabaseError as exc:
            self.on_error(exc)


def header(command: Command) -> str:
    """Return the first lines of an operation's output: the command and its stdin."""
    text = f"$ {command.display()}\n"
    if command.stdin is not None:
        text += "# configuration given on stdin:\n" + command.stdin
        text += "" if command.stdin.endswith("\n") else "\n"
    return text
