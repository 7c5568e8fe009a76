"""Random writes on both sides of random outages: no acknowledged write is lost."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clusters.models import Cluster
from kindler.db.failover.pinning import pinned_alias
from kindler.db.models import AppliedEntry, Conflict, JournalEntry, SyncRun
from kindler.db.sync import writethrough
from kindler.db.sync.journal import journal_suppressed
from kindler.db.sync.mirror import mirror
from kindler.db.sync.replay import replay
from tests.conftest import BOTH

pytestmark = [pytest.mark.django_db(databases=BOTH, transaction=True), pytest.mark.slow]

NAMES = ["a", "b"]
State = tuple[str, int] | None


@dataclass(frozen=True)
class Write:
    side: str
    uid: uuid.UUID
    state: State
    version: int
    base: int | None


steps = st.lists(
    st.one_of(
        st.just(("sync",)),
        st.tuples(
            st.sampled_from(["local", "remote"]),
            st.sampled_from(["create", "update", "delete"]),
            st.sampled_from(NAMES),
            st.integers(min_value=20000, max_value=20100),
        ),
    ),
    max_size=25,
)


SYNC = ("sync",)
R_CREATE = ("remote", "create", "a", 20000)


def clean() -> None:
    Cluster.objects.using("postgres").all().delete()
    for model in (Conflict, AppliedEntry):
        model.objects.using("postgres").all().delete()
    with journal_suppressed():
        Cluster.objects.using("sqlite").all().delete()
    for model in (JournalEntry, SyncRun):  # type: ignore[assignment]
        model.objects.using("sqlite").all().delete()


def act(side: str, action: str, name: str, port: int) -> Write | None:
    """Do one write on one side; return it if it was made (a port taken refuses it)."""
    alias = "sqlite" if side == "local" else "postgres"
    # Each name has host ports of its own besides http_port, the one the steps vary.
    others = {"https_port": 30000 + NAMES.index(name), "pf_port": 31000 + NAMES.index(name)}
    # A remote write is another instance's: it reaches this SQLite only by the mirror.
    with pinned_alias(alias), writethrough.suppressed():
        found = Cluster.objects.filter(name=name).first()
        if action == "create":
            if found is not None:
                return None
            try:
                with transaction.atomic(using=alias):
                    cluster = Cluster.objects.create(name=name, http_port=port, **others)
            except IntegrityError:
                return None
            return Write(side, cluster.uid, (name, port), cluster.version, None)
        if found is None:
            return None
        base = found.version
        if action == "update":
            found.http_port = port
            try:
                with transaction.atomic(using=alias):
                    found.save()
            except IntegrityError:
                return None
            return Write(side, found.uid, (name, port), found.version, base)
        uid = found.uid
        found.delete()
        return Write(side, uid, None, base, base)


def postgres_state(uid: uuid.UUID) -> State:
    row = Cluster.objects.using("postgres").filter(uid=uid).first()
    return None if row is None else (row.name, row.http_port)


def conflict_states(uid: uuid.UUID) -> list[State]:
    states: list[State] = []
    for conflict in Conflict.objects.using("postgres").filter(resolved_at__isnull=True):
        for side in (conflict.local, conflict.remote):
            if side is None:
                if conflict.row_uid == str(uid):
                    states.append(None)
            elif side["uid"] == str(uid):
                states.append((side["name"], side["http_port"]))
    return states


def superseded(write: Write, later: list[Write]) -> bool:
    # A later write replaces this one if it was made on top of it: on the
    # version it produced or a newer one (the writer had seen it).
    return any(
        other.uid == write.uid and other.base is not None and other.base >= write.version
        for other in later
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps)
# One of each conflict kind, besides whatever hypothesis finds.
@example(steps=[R_CREATE, SYNC, ("local", "update", "a", 20001), ("remote", "update", "a", 20002)])
@example(steps=[("local", "create", "a", 20001), R_CREATE])
@example(steps=[R_CREATE, SYNC, ("local", "update", "a", 20001), ("remote", "delete", "a", 0)])
@example(steps=[R_CREATE, SYNC, ("local", "delete", "a", 0), ("remote", "update", "a", 20002)])
def test_every_acknowledged_write_is_in_postgres_or_a_conflict(steps: list[Any]) -> None:
    clean()
    writes: list[Write] = []
    for step in steps:
        if step == ("sync",):
            replay()
            mirror()
            continue
        done = act(*step)
        if done is not None:
            writes.append(done)
    replay()
    for index, write in enumerate(writes):
        if superseded(write, writes[index + 1 :]):
            continue
        # Accounted for: PostgreSQL holds this state, or a conflict keeps it.
        places = [postgres_state(write.uid), *conflict_states(write.uid)]
        assert write.state in places, f"{write} is neither in PostgreSQL nor in a conflict"
