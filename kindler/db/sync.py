"""Replay and mirror together, as the background sync and `sync_db` run them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kindler.db.conflicts import open_conflicts
from kindler.db.journal import pending
from kindler.db.mirror import MirrorReport, mirror
from kindler.db.replay import Progress, ReplayReport, replay


@dataclass
class SyncReport:
    replay: ReplayReport | None
    mirror: MirrorReport | None
    open_conflicts: int
    pending: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "push": self.replay.as_dict() if self.replay else None,
            "pull": self.mirror.as_dict() if self.mirror else None,
            "open_conflicts": self.open_conflicts,
            "pending": self.pending,
        }


def drain_and_mirror(*, with_mirror: bool) -> None:
    """Replay whatever the journal holds, then mirror PostgreSQL if asked."""
    if pending():
        replay()
    if with_mirror:
        mirror()


def run(
    *,
    push: bool = True,
    pull: bool = True,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> SyncReport:
    """Replay (push) and/or mirror (pull), and report the outcome."""
    pushed = replay(dry_run=dry_run, progress=progress) if push else None
    pulled = mirror(dry_run=dry_run, progress=progress) if pull else None
    return SyncReport(pushed, pulled, open_conflicts(), pending())
