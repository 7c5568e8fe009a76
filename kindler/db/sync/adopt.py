"""Meet a PostgreSQL that is new, replaced or restored without losing local rows.

reconcile_identity() is the check recovery and the background mirror make
before anything else: one query to PostgreSQL, one to SQLite, nothing more
while PostgreSQL is the database this SQLite file last mirrored. When it is
not (a new database, another one, one restored from an older dump), it runs
a full mirror, which merges both ways (see kindler.db.sync.mirror): local
rows and accounts PostgreSQL lacks are carried into it and listed as
adopted, restored or failover, deletes it lost are made again (tombstones),
clashes become conflicts, and only deletes recorded in PostgreSQL's change
log reach SQLite.

push_all() carries every local row by hand (`sync_db --push --all`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.contrib.auth.models import User
from django.db import connections

from kindler.db import POSTGRES, SQLITE
from kindler.db.models import RestoredWhy
from kindler.db.sync import identity
from kindler.db.sync.accounts import carry_accounts
from kindler.db.sync.carry import CarryReport, carry, local_rows
from kindler.db.sync.journal import synced_models
from kindler.db.sync.mirror import MirrorReport, mirror, refresh
from kindler.db.sync.tables import table_for

logger = logging.getLogger("kindler.db")


@dataclass
class AdoptReport:
    """What meeting PostgreSQL did: nothing (why is None), or a merge and its outcome."""

    why: str | None = None
    mirror: MirrorReport | None = None

    @property
    def restored(self) -> list[tuple[str, str, str, str]]:
        return self.mirror.restored if self.mirror else []

    def summary(self) -> str:
        if self.why is None or self.mirror is None:
            return "PostgreSQL is the database this file mirrors"
        return f"{self.why}: {self.mirror.summary()}"


def check() -> str | None:
    """Return why PostgreSQL needs a merge ("adopted", "restored", "failover"), or None."""
    return identity.change(identity.read(), identity.known())


def reconcile_identity() -> AdoptReport:
    """Merge SQLite into PostgreSQL when PostgreSQL is new, replaced, restored or failed over."""
    current, remembered = identity.read(), identity.known()
    why = identity.change(current, remembered)
    if why is None:
        return AdoptReport()
    # First contact is every new file's start, not news; another database or
    # a failover is.
    logger.log(
        logging.INFO if remembered is None else logging.WARNING,
        "Checking PostgreSQL (%s) against this file: %s",
        why,
        identity.described(current, remembered),
    )
    started = time.monotonic()
    report = AdoptReport(why, mirror(full=True))
    if why == RestoredWhy.ADOPTED and report.restored:
        logger.info(
            "Carried %s of this file into PostgreSQL in %.1f s",
            counted(label for label, _, _, _ in report.restored),
            time.monotonic() - started,
        )
    return report


def counted(labels: Iterable[str]) -> str:
    """Return "5 clusters and 2 operation logs" for the model labels of carried rows."""
    counts = Counter(labels)
    parts = []
    for label, count in sorted(counts.items()):
        meta = apps.get_model(label)._meta
        parts.append(f"{count} {meta.verbose_name if count == 1 else meta.verbose_name_plural}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]}"


@dataclass
class PushAllReport:
    """What `sync_db --push --all` carried into PostgreSQL."""

    carried: CarryReport = field(default_factory=CarryReport)
    accounts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "restored": len(self.carried.restored),
            "conflicts": self.carried.conflicts,
            "accounts": self.accounts,
        }


def push_all(*, dry_run: bool = False) -> PushAllReport:
    """Carry every local row and account PostgreSQL lacks (or holds older) into it."""
    report = PushAllReport(accounts=carry_accounts(dry_run=dry_run))
    for model in synced_models():
        table = table_for(model._meta.label_lower)
        report.carried.merge(carry(table, local_rows(table), RestoredWhy.ADOPTED, dry_run=dry_run))
    if report.carried.refresh and not dry_run:
        refresh(report.carried.refresh)
    return report


@dataclass(frozen=True)
class Waiting:
    """What a PostgreSQL holding no synced rows would receive from this SQLite file."""

    rows: list[tuple[int, str]]
    accounts: int
    path: str

    def notice(self) -> str:
        parts = [f"{count} {name}" for count, name in self.rows]
        parts.append(f"{self.accounts} account{'' if self.accounts == 1 else 's'}")
        listed = ", ".join(parts[:-1]) + f" and {parts[-1]}"
        return (
            f"PostgreSQL holds no {self.rows[0][1]} yet: Kindler will carry the {listed} "
            f"of {self.path} into it when it starts (or run `scripts/manage sync_db --push --all`)."
        )


def waiting_for_adoption() -> Waiting | None:
    """Return what SQLite would carry into PostgreSQL, when PostgreSQL holds no synced rows."""
    models = synced_models()
    with connections[POSTGRES].cursor() as pg:
        for model in models:
            pg.execute(f"SELECT EXISTS (SELECT 1 FROM {model._meta.db_table})")
            if pg.fetchone()[0]:
                return None
    rows = []
    with connections[SQLITE].cursor() as lite:
        for model in models:
            lite.execute(f"SELECT count(*) FROM {model._meta.db_table}")
            rows.append((int(lite.fetchone()[0]), str(model._meta.verbose_name_plural)))
    if not any(count for count, _ in rows):
        return None
    accounts = User.objects.using(SQLITE).count()
    return Waiting(rows, accounts, str(connections[SQLITE].settings_dict["NAME"]))
