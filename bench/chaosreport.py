"""The chaos benchmark's phases, their rows and the Markdown table (bench/chaos.py)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.services import health
from bench.workload import Call, Problem


@dataclass
class Phase:
    fault: str
    started: float = 0.0
    injected: float = 0.0
    recovered: float = 0.0
    ended: float = 0.0
    note: str = ""
    reads_kept: bool = False
    skipped: str | None = None
    error: str | None = None
    conflict_mark: int = 0
    self_conflicts: list[str] = field(default_factory=list)
    back: bool = True
    kindler_down: list[tuple[float, float]] = field(default_factory=list)
    # A database put back or replaced: the rows Kindler wrote back into it (RestoredRow).
    written_back: int | None = None
    # Clusters PostgreSQL had removed after the backup was taken, which the restore brought
    # back: their acknowledged deletes are counted apart, not as missing or wrong.
    back_after_restore: set[str] = field(default_factory=set)
    # Switches of the instance's state during the phase (its switch history), and the most
    # the fault may cause (None: not part of the promise).
    state_changes: int | None = None
    max_state_changes: int | None = None
    switch_mark: int = 0
    # What health's state_cause must name at the end of the hold, and what it said.
    expected_cause: str | None = None
    state_cause: str | None = None


class HealthWatch:
    """Poll /api/health every 100 ms and keep (time, active, state) samples."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, str | None, str | None]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            database = health(self.port)
            at = time.monotonic()
            if database is None:
                self.samples.append((at, None, None))
            else:
                self.samples.append((at, database["active"], database["state"]))
            time.sleep(0.1)

    def switched_down(self, after: float, before: float) -> float | None:
        for at, active, _ in self.samples:
            if after <= at < before and active == "sqlite":
                return at - after
        return None

    def switched_back(self, after: float) -> float | None:
        run: list[float] = []
        for at, active, state in self.samples:
            if at < after:
                continue
            run = [*run, at] if (active, state) == ("postgres", "primary") else []
            if len(run) == 3:
                return run[0] - after
        return None


def phase_row(
    phase: Phase, every: list[Call], problems: list[Problem], watch: HealthWatch, budget: float
) -> dict[str, Any]:
    """Return one fault's row: what was sent, answered and kept, and whether the promise held."""
    calls = [c for c in every if phase.started <= c.at < phase.ended]
    during = [p for p in problems if phase.started <= p.at < phase.ended]
    mine = [p for p in during if p.name not in phase.back_after_restore]
    resurrected = [p for p in during if p.name in phase.back_after_restore]
    failed = Counter(f"{c.kind} {c.status}" for c in calls if not c.ok)
    down = watch.switched_down(phase.injected, phase.recovered) if calls else None
    back = watch.switched_back(phase.recovered) if down is not None else None
    detected = phase.injected + (down if down is not None else 0.0)

    def excused(call: Call) -> bool:
        # Nobody answers while Kindler itself is restarted; that is not a read lost.
        return any(start - 1 <= call.at <= stop + 1 for start, stop in phase.kindler_down)

    late_reads = [
        c for c in calls if c.kind == "read" and not c.ok and c.at > detected and not excused(c)
    ]
    acked_at = {c.name: c.ended for c in every if c.kind == "create" and c.ok}
    # How long before the switch was seen each cluster read as 404 had been acknowledged.
    unseen = [
        round(detected - acked_at[c.name], 2)
        for c in late_reads
        if c.status == "404" and c.name in acked_at
    ]
    unavailable = [c for c in calls if c.status == "503"]
    row: dict[str, Any] = {
        "fault": phase.fault,
        "skipped": phase.skipped,
        "error": phase.error,
        "sent": len(calls),
        "acked_writes": sum(1 for c in calls if c.is_write and c.ok),
        "missing_or_wrong": len(mine),
        "problems": [f"{p.name}: {p.what}" for p in mine[:10]],
        "written_back": phase.written_back,
        "deleted_after_backup_back": len(resurrected),
        "back_after_restore": [f"{p.name}: {p.what}" for p in resurrected[:10]],
        "http_500": sum(1 for c in calls if c.status == "500"),
        "self_conflicts": len(phase.self_conflicts),
        "conflicts": phase.self_conflicts,
        "max_latency_s": round(max((c.latency for c in calls), default=0.0), 3),
        "over_budget": sum(1 for c in calls if c.latency > budget),
        "http_503": len(unavailable),
        "http_503_without_detail": sum(1 for c in unavailable if not c.detail),
        "details_503": dict(Counter(c.detail or "" for c in unavailable).most_common()),
        "failed": dict(sorted(failed.items())),
        "switch_down_s": None if down is None else round(down, 2),
        "switch_back_s": None if back is None else round(back, 2),
        "back_on_postgres": phase.back,
        "reads_kept": phase.reads_kept,
        "failed_reads_after_switch": len(late_reads),
        # 404 for a cluster Kindler had acknowledged: SQLite's copy was behind.
        "stale_reads_after_switch": sum(1 for c in late_reads if c.status == "404"),
        "not_found_acked_before_switch_s": sorted(unseen),
        "note": phase.note,
        "state_changes": phase.state_changes,
        "max_state_changes": phase.max_state_changes,
        "state_cause": phase.state_cause,
        "cause_named": phase.expected_cause is None
        or phase.expected_cause in (phase.state_cause or ""),
    }
    row["promise_kept"] = (
        phase.error is None
        and phase.back
        and not mine
        and row["http_500"] == 0
        and row["self_conflicts"] == 0
        and row["over_budget"] == 0
        and row["http_503_without_detail"] == 0
        and not (phase.reads_kept and late_reads)
        and row["cause_named"]
        and (
            phase.max_state_changes is None
            or (phase.state_changes is not None and phase.state_changes <= phase.max_state_changes)
        )
    )
    return row


def describe_conflict(
    kind: str, model: str, name: str, seq: int, base: Any, local: Any, remote: Any
) -> str:
    """Return one line saying what a conflict holds, for finding out how it came about."""
    sides = {"base": base or {}, "local": local or {}, "remote": remote or {}}
    versions = ", ".join(f"{side} v{row.get('version', '-')}" for side, row in sides.items())
    stamps = {"version", "updated_at", "created_at", "last_reconciled_at"}
    keys = sorted({k for row in sides.values() for k in row} - stamps)
    differ = [
        f"{k}: " + " / ".join(str(row.get(k, "-")) for row in sides.values())
        for k in keys
        if len({json.dumps(row.get(k), sort_keys=True) for row in sides.values()}) > 1
    ]
    return f"{kind} on {model} {name} (journal seq {seq}; {versions}); base / local / remote: " + (
        "; ".join(differ) or "no field differs"
    )


def markdown(result: dict[str, Any]) -> str:
    """Return the result as a Markdown table with the promise check."""
    head = (
        "| fault | sent | acked writes | missing or wrong | 500s | self-conflicts "
        "| longest s | 503s (no detail) | other failures (by status) | switch down s "
        "| switch back s | failed reads after switch (404) "
        "| written back (deleted after the backup, back after the restore) | promise |"
    )
    lines = [head, "|" + "---|" * 14]
    for row in result["faults"]:
        if row["skipped"]:
            lines.append(f"| {row['fault']} | skipped: {row['skipped']} |" + " |" * 12)
            continue
        other = {k: v for k, v in row["failed"].items() if not k.endswith(" 503")}
        cells = [
            row["fault"],
            row["sent"],
            row["acked_writes"],
            row["missing_or_wrong"],
            row["http_500"],
            row["self_conflicts"],
            row["max_latency_s"],
            f"{row['http_503']} ({row['http_503_without_detail']})",
            ", ".join(f"{k}: {v}" for k, v in other.items()) or "none",
            "—" if row["switch_down_s"] is None else row["switch_down_s"],
            "—" if row["switch_back_s"] is None else row["switch_back_s"],
            f"{row['failed_reads_after_switch']} ({row['stale_reads_after_switch']})"
            + ("" if row["reads_kept"] else "*"),
            "—"
            if row["written_back"] is None
            else f"{row['written_back']} ({row['deleted_after_backup_back']})",
            "kept" if row["promise_kept"] else "BROKEN",
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    notes: list[str] = []
    for row in result["faults"]:
        if row["note"]:
            notes.append(f"- {row['fault']}: {row['note']}")
        if row.get("max_state_changes") is not None:
            notes.append(
                f"- {row['fault']}: {row['state_changes']} state changes "
                f"(at most {row['max_state_changes']})"
            )
        if row["error"]:
            notes.append(f"- {row['fault']}: the fault failed: {row['error']}")
        if not row["back_on_postgres"]:
            notes.append(f"- {row['fault']}: Kindler was not back on PostgreSQL within 60 s")
        for detail, count in row["details_503"].items():
            notes.append(f"- {row['fault']}: 503 x {count}: {detail or '(no JSON detail)'}")
        notes += [f"- {row['fault']}: {problem}" for problem in row["problems"]]
        notes += [
            f"- {row['fault']}: deleted after the backup, back after the restore: {problem}"
            for problem in row["back_after_restore"]
        ]
        notes += [f"- {row['fault']}: conflict {text}" for text in row["conflicts"]]
        if row["not_found_acked_before_switch_s"]:
            notes.append(
                f"- {row['fault']}: reads answered 404 after the switch were for clusters"
                " PostgreSQL had acknowledged"
                f" {', '.join(map(str, row['not_found_acked_before_switch_s']))} s before"
                " the switch was seen (negative: after it)"
            )
    summary = (
        f"Request bound {result['budget_seconds']:g} s ({result['budget']}); "
        f"{result['requests']} requests; "
        f"settled back on PostgreSQL with an empty journal: {result['settled']}; "
        f"missing or wrong outside the faults: {result['missing_or_wrong_outside_faults']}; "
        f"promise {'kept for every fault' if result['promise_kept'] else 'BROKEN'}. "
        "* failed reads count toward the promise only in outages with a healthy SQLite file."
    )
    return "\n".join([*lines, "", *notes, "", summary])
