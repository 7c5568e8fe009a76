"""Post-operation hooks: the executables in KINDLER_HOOKS_DIR, run after each successful operation.

Each hook gets the cluster as a JSON object on stdin and its fields in the
environment (KINDLER_CLUSTER_<FIELD>, booleans as true/false, plus
KINDLER_OPERATION), beside a child's small environment (never Kindler's
secrets). Hooks run one after the other in name order, each with
KINDLER_HOOK_TIMEOUT seconds; their output goes into the operation's log, its
beginning and end when there is much of it.
A hook that fails marks the operation with a warning and never undoes it.

A hook says what it did with a line of its own output:

    kindler: registered portainer
    kindler: unregistered argocd
    kindler: registered haproxy https://dev.example.test/

Only such a line makes the dashboard say "registered".
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from clusters.drivers import Command
from clusters.drivers.base import run, strip_escapes
from clusters.drivers.environment import child_environment
from clusters.models import Cluster, Operation

HOOKED_OPERATIONS = (Operation.CREATE, Operation.DELETE, Operation.START, Operation.STOP)
# The cluster flag each integration a hook can report on answers to.
INTEGRATIONS = {
    "portainer": "register_portainer",
    "haproxy": "haproxy_route",
    "argocd": "register_argocd",
}
CLAIM = re.compile(
    r"^kindler:[ \t]+(registered|unregistered)[ \t]+(portainer|haproxy|argocd)\b[ \t]*(.*)$",
    re.MULTILINE,
)
DOCUMENT_FIELDS = (
    "uid",
    "name",
    "provider",
    "node_port",
    "pf_port",
    "http_port",
    "https_port",
    "subnet",
    "server_ip",
    "register_portainer",
    "haproxy_route",
    "register_argocd",
    "desired_state",
    "actual_state",
)


@dataclass
class HookResult:
    """How one hook ended, as stored in the operation log's hooks field."""

    hook: str
    status: str  # ok | failed | timeout | interrupted
    exit_code: int | None
    seconds: float
    claims: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        took = f"in {self.seconds:.1f} s"
        if self.status == "ok":
            return f"ok {took}"
        if self.status == "timeout":
            return f"timed out after {self.seconds:g} s and was killed"
        if self.status == "interrupted":
            return "interrupted: Kindler was stopped while it ran"
        return f"failed with exit status {self.exit_code} {took}"


def hook_paths(directory: Path) -> list[Path]:
    """Return the executable files of directory in name order (hidden files left out)."""
    return sorted(
        (
            path
            for path in directory.iterdir()
            if path.is_file() and not path.name.startswith(".") and os.access(path, os.X_OK)
        ),
        key=lambda path: path.name,
    )


def time_budget() -> float:
    """Return the longest the hooks of one operation may take, in seconds."""
    directory = str(settings.KINDLER_HOOKS_DIR)
    if not directory:
        return 0.0
    try:
        count = len(hook_paths(Path(directory)))
    except OSError:
        return 0.0
    return count * float(settings.KINDLER_HOOK_TIMEOUT)


def cluster_document(cluster: Cluster, actual_state: str) -> dict[str, Any]:
    """Return the cluster as the hooks see it, in the state the operation left it."""
    document = {name: getattr(cluster, name) for name in DOCUMENT_FIELDS}
    document["uid"] = str(cluster.uid)
    document["actual_state"] = actual_state
    return document


def environment(document: dict[str, Any], operation: str) -> dict[str, str]:
    """Return the hook's environment: a child's, the operation and the cluster's fields."""
    fields = {"KINDLER_OPERATION": operation}
    for name, value in document.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = "" if value is None else str(value)
        fields[f"KINDLER_CLUSTER_{name.upper()}"] = text
    return child_environment(fields)


def claims_in(output: str) -> dict[str, dict[str, str]]:
    """Return what a hook's output says it registered or unregistered, by integration."""
    claims: dict[str, dict[str, str]] = {}
    for verb, integration, detail in CLAIM.findall(output):
        claims[integration] = {"state": verb, "detail": detail.strip()}
    return claims


def run_hooks(
    cluster: Cluster,
    operation: str,
    actual_state: str,
    on_output: Callable[[str], None],
    should_stop: Callable[[], bool] | None = None,
) -> str | None:
    """Run every hook for a successful operation; return their results as JSON (None: none)."""
    directory = str(settings.KINDLER_HOOKS_DIR)
    if not directory or operation not in HOOKED_OPERATIONS:
        return None
    try:
        paths = hook_paths(Path(directory))
    except OSError as exc:
        on_output(f"# hooks: cannot read {directory}: {exc.strerror}\n")
        return json.dumps([asdict(HookResult(directory, "failed", None, 0.0))])
    document = cluster_document(cluster, actual_state)
    stdin = json.dumps(document, indent=2) + "\n"
    env = environment(document, operation)
    results = []
    for path in paths:
        results.append(_run_one(path, stdin, env, on_output, should_stop))
        if results[-1]["status"] == "interrupted":
            break
    return json.dumps(results)


def _run_one(
    path: Path,
    stdin: str,
    env: dict[str, str],
    on_output: Callable[[str], None],
    should_stop: Callable[[], bool] | None,
) -> dict[str, Any]:
    timeout = float(settings.KINDLER_HOOK_TIMEOUT)
    on_output(f"# hook {path.name}\n")
    started = time.monotonic()
    result = run(
        Command((str(path),), stdin=stdin),
        timeout=timeout,
        on_output=on_output,
        should_stop=should_stop,
        env=env,
    )
    output = strip_escapes(result.output)
    if output and not output.endswith("\n"):
        on_output("\n")
    if result.ok:
        status = "ok"
    elif result.timed_out:
        status = "timeout"
    elif result.interrupted:
        status = "interrupted"
    else:
        status = "failed"
    seconds = timeout if status == "timeout" else round(time.monotonic() - started, 3)
    hook = HookResult(path.name, status, result.exit_code, seconds, claims_in(output))
    on_output(f"# hook {path.name}: {hook.summary}\n")
    return asdict(hook)
