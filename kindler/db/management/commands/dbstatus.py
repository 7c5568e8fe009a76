"""`manage.py dbstatus [--json]`: which database Kindler uses, and why."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandParser

from kindler import __version__
from kindler.commands import RoutineCommand
from kindler.db import files, telemetry
from kindler.db.failover.monitor import monitor
from kindler.db.models import SyncRun
from kindler.db.status import (
    ConnectionBudget,
    DatabaseStatus,
    ProcessConnections,
    SyncStatus,
    connection_budget,
    database_status,
)
from kindler.db.sync import runs
from kindler.sections import read_sections


class Command(RoutineCommand):
    help = "Show the active database, its state and why, and whether PostgreSQL answers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        status = database_status(monitor.check_now())
        figures = telemetry.report(status.failover)
        sections = read_sections()
        processes = status.connections()
        budget = connection_budget(status.failover)
        warnings = files.secrets_file_warnings()
        if options["json"]:
            report = {
                "warnings": warnings,
                **{section.key: section.data for section in sections},
                **status.as_json(),
                **figures,
                "pool": {
                    "processes": [row.as_json() for row in processes],
                    "budget": budget.as_json() if budget is not None else None,
                },
                "switches": status.switches_as_json(),
                "sync_runs": [
                    {"kind": run.kind, **(runs.as_json(run) or {})}
                    for run in (status.sync.recent_runs if status.sync else ())
                ],
            }
            self.stdout.write(json.dumps(report, indent=2))
            return
        for line in status_lines(status):
            self.stdout.write(line)
        for warning in warnings:
            self.stdout.write(f"Warning:         {warning}")
        for section in sections:
            self.stdout.write(f"{section.title}:")
            for line in section.lines:
                self.stdout.write(f"  {line}")
        for line in telemetry.report_lines({**figures, "switches": status.switches_as_json()}):
            self.stdout.write(line)
        if budget is not None:
            for line in pool_lines(processes, budget):
                self.stdout.write(line)
        if status.sync is not None:
            for line in sync_lines(status.sync):
                self.stdout.write(line)


def status_lines(status: DatabaseStatus) -> list[str]:
    """Return the active database, its state and PostgreSQL's answer as text lines."""
    snapshot, probe = status.failover, status.failover.probe
    if not snapshot.configured:
        reachability = "not configured (PG_HOST is unset)"
    elif probe is None:
        reachability = "not probed yet"
    elif probe.usable:
        reachability = f"reachable, {probe.latency_ms:.1f} ms"
    elif probe.reachable:
        reachability = f"reachable but unusable: {probe.error}"
    else:
        reachability = f"unreachable: {probe.error}"
    if snapshot.active is None:
        active = "none: PostgreSQL cannot take writes and KINDLER_FALLBACK=off"
    else:
        active = snapshot.active
    lines = [
        f"Active database: {active}",
        f"State:           {snapshot.state} since {snapshot.since.isoformat()} ({snapshot.cause})",
        f"PostgreSQL:      {reachability}",
    ]
    database = status.schema or "not recorded"
    verdict = ": upgrade required" if status.upgrade_required else ""
    lines.append(f"Schema:          code {__version__}, database {database}{verdict}")
    if status.node is not None:
        seen = status.node.seen_at.isoformat() if status.node.seen_at else "never"
        lines.append(f"Primary node:    {status.node}, checked {seen}")
    hosts = status.hosts_as_json()
    if len(hosts) > 1:
        lines.append("Hosts:")
        for host in hosts:
            marker = " (active)" if host["active"] else ""
            detail = host["error"] or f"{host['latency_ms']:.1f} ms"
            lines.append(f"  {host['address']:<21} {host['role']}{marker}: {detail}")
    return lines


def pool_lines(processes: list[ProcessConnections], budget: ConnectionBudget) -> list[str]:
    """Return each process's PostgreSQL connections and the sizing check as text lines."""
    lines = ["PostgreSQL connections (per process):"]
    if not processes:
        lines.append("  none opened yet")
    for p in processes:
        bounds = f"pool {p.minimum}-{p.maximum}" if p.maximum else "no pool"
        lines.append(
            f"  {p.alias} pid {p.pid}: {p.open} open, {p.in_use} in use, {p.idle} idle, "
            f"{p.waiting} waiting ({bounds}); {p.waits} waits, {p.wait_seconds:.3f} s waited, "
            f"{p.timeouts} timeouts; {p.opened} opened, {p.closed} closed; "
            f"probe {p.probes_open} open, {p.probes_opened} opened"
        )
    available = "unknown" if budget.available is None else str(budget.available)
    lines.append(
        f"Sizing:          {budget.instances} instance(s) x ({budget.processes} processes x "
        f"{budget.per_process} + 1 probe) = {budget.total} of PostgreSQL's {available}"
    )
    if budget.warning:
        lines.append(f"WARNING: {budget.warning}")
    return lines


def sync_lines(sync: SyncStatus) -> list[str]:
    """Return the journal, conflicts, last runs and mirror lag as text lines."""
    if sync.pending is None:
        journal = "unknown (the SQLite journal cannot be read)"
    else:
        oldest = f", oldest {sync.oldest_pending}" if sync.oldest_pending else ""
        journal = f"{sync.pending} pending{oldest}"
    conflicts = sync.open_conflicts
    shown = "unknown (PostgreSQL is not active)" if conflicts is None else str(conflicts)
    lag = sync.mirror_lag_seconds
    return [
        f"Journal:         {journal}",
        f"Open conflicts:  {shown}",
        f"Last replay:     {run_line(sync.last_replay)}",
        f"Last mirror:     {run_line(sync.last_mirror)}",
        f"Mirror lag:      {'never mirrored' if lag is None else f'{lag:.1f} s'}",
        "Recent runs:" if sync.recent_runs else "Recent runs:     none",
        *(f"  {run.kind:<7} {run_line(run)}" for run in sync.recent_runs),
    ]


def run_line(run: SyncRun | None) -> str:
    """Return one line for a replay or mirror run."""
    if run is None:
        return "never"
    outcome = "ok" if run.ok else "FAILED"
    return f"{run.finished_at.isoformat()} {outcome} in {run.duration_ms:.0f} ms: {run.result}"
