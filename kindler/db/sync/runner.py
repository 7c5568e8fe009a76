"""Replay and mirror together, as the background sync and `sync_db` run them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kindler.db.failover.state import State, switch
from kindler.db.models import Conflict, RestoredWhy
from kindler.db.sync import identity
from kindler.db.sync.adopt import AdoptReport, PushAllReport, push_all, reconcile_identity
from kindler.db.sync.conflicts import open_conflict_list, open_conflicts
from kindler.db.sync.journal import pending
from kindler.db.sync.mirror import MirrorReport, mirror
from kindler.db.sync.replay import Progress, ReplayReport, replay

IDENTITY_CHANGED = "PostgreSQL was restored, replaced or restarted"
PRIMARY_CHANGED = "PostgreSQL's primary changed (failover)"
CHECKED_AGAIN: dict[str, str] = {
    RestoredWhy.RESTORED: IDENTITY_CHANGED,
    RestoredWhy.FAILOVER: PRIMARY_CHANGED,
}


@dataclass
class SyncReport:
    replay: ReplayReport | None
    mirror: MirrorReport | None
    open_conflicts: int
    pending: int
    pushed_all: PushAllReport | None = None
    adopted: AdoptReport | None = None
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def restored(self) -> list[tuple[str, str, str, str]]:
        rows = list(self.pushed_all.carried.restored) if self.pushed_all else []
        return rows + (self.mirror.restored if self.mirror else [])

    def as_dict(self) -> dict[str, Any]:
        return {
            "push": self.replay.as_dict() if self.replay else None,
            "pull": self.mirror.as_dict() if self.mirror else None,
            "push_all": self.pushed_all.as_dict() if self.pushed_all else None,
            "open_conflicts": self.open_conflicts,
            "conflicts": [
                {"uid": str(c.uid), "kind": c.kind, "name": c.name or c.row_uid}
                for c in self.conflicts
            ],
            "pending": self.pending,
        }


def drain_and_mirror(*, with_mirror: bool) -> None:
    """Replay whatever the journal holds, then mirror PostgreSQL if asked.

    Before mirroring, a PostgreSQL that was restored, replaced or failed
    over (a new timeline) sends the instance back to recovering, so requests
    go to SQLite while the merge writes back what PostgreSQL lost (recovery
    then promotes it again). The switch names both nodes in the history. A
    first contact merges too, without the detour: there is nothing on
    PostgreSQL to be wrong about.
    """
    if pending():
        replay()
    if not with_mirror:
        return
    current, remembered = identity.read(), identity.known()
    why = identity.change(current, remembered)
    if why in CHECKED_AGAIN:
        cause = f"{CHECKED_AGAIN[why]}: {identity.described(current, remembered)}"
        switch({State.PRIMARY}, State.RECOVERING, cause=cause)
        reconcile_identity()
        return
    mirror()


def run(
    *,
    push: bool = True,
    pull: bool = True,
    push_every_row: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> SyncReport:
    """Replay (push) and/or mirror (pull), and report the outcome."""
    pushed = replay(dry_run=dry_run, progress=progress) if push else None
    pushed_all = push_all(dry_run=dry_run) if push_every_row else None
    adopted = None if dry_run or not pull else reconcile_identity()
    if adopted is not None and adopted.mirror is not None:
        pulled: MirrorReport | None = adopted.mirror
    else:
        pulled = mirror(dry_run=dry_run, progress=progress) if pull else None
    return SyncReport(
        pushed, pulled, open_conflicts(), pending(), pushed_all, adopted, open_conflict_list()
    )
