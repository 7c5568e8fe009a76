"""The replay's per-instance lock (kindler/db/sync/locks.py): a file lock, not a PostgreSQL one.

That no advisory lock is left in PostgreSQL after real outages and replays
through PgBouncer is shown in tests/db/test_pool_pgbouncer.py.
"""

from __future__ import annotations

import threading

import pytest

from kindler.db.failover.pinning import pinned_alias
from kindler.db.sync import locks, replay
from kindler.db.sync.locks import instance_lock
from kindler.db.sync.replay import ReplayError
from tests.conftest import BOTH
from tests.factories import make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH)


def test_the_instance_lock_is_taken_by_one_holder_at_a_time() -> None:
    with instance_lock(1.0) as first:
        seen: list[bool] = []

        def second() -> None:
            with instance_lock(0.2) as held:
                seen.append(held)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(5)
    with instance_lock(0.2) as again:
        assert (first, seen, again) == (True, [False], True)


def test_a_replay_waits_for_another_holder_then_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replay, "LOCK_WAIT", 0.3)
    with pinned_alias("sqlite"):
        make_cluster(name="journaled")
    with instance_lock(1.0), pytest.raises(ReplayError) as raised:
        replay.replay()
    assert str(raised.value) == "another process of this instance is replaying its journal"


def test_the_instance_lock_is_a_file_beside_sqlite() -> None:
    assert locks.replay_lock_path().endswith(".replay-lock")
