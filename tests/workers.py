"""How scripts/test shares the tests among its pytest-xdist workers (--dist loadfile).

A file's tests stay together on one worker, so a module fixture (an earlier
checkout, a compose project, a chaos run) is made once. The Patroni and chaos
tests, which run whole clusters of servers and time their failovers, share
one worker so that they never run beside each other; the docs examples, each a
minute or so and independent, spread over all of them. The longest groups start
first, so that none is left to run alone at the end while the other workers
idle.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from xdist.scheduler import LoadFileScheduling

# Files whose tests share no module fixture and take a minute or so each.
SPREAD = ("tests/docs/test_examples.py",)
SHARED_GROUPS = {
    "tests/db/sync/test_patroni.py": "clusters of servers",
    "tests/test_chaos.py": "clusters of servers",
}
# Longest first, as measured with --durations in PostgreSQL mode.
SLOW_FIRST = (
    "clusters of servers",
    "tests/docs/test_examples.py",
    "tests/browser/test_original_webui.py",
    "tests/test_rolling_upgrade.py",
    "tests/db/sync/test_earlier_journal.py",
    "tests/db/failover/test_hosts.py",
    "tests/db/sync/test_replay.py",
)


def group_of(nodeid: str) -> str:
    """Return the group of the test nodeid: its file, the group its file shares, or itself."""
    path = nodeid.split("::", 1)[0]
    if path in SPREAD:
        return nodeid
    return SHARED_GROUPS.get(path, path)


class FileGroupScheduling(LoadFileScheduling):
    """Send each group of tests to one worker, in the order the workers collected them."""

    def __init__(self, config: Any, log: Any = None) -> None:
        super().__init__(config, log)
        # The workers put the slowest groups first (in_queue_order); xdist's
        # own reordering, by the number of tests, would undo it.
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid)


def in_queue_order(nodeids: list[str]) -> list[str]:
    """Return nodeids with the SLOW_FIRST groups first, then the other groups, largest first.

    Every worker collects the tests in this order: the scheduler names the
    tests it sends by their place in the list, so it cannot reorder them itself.
    """
    sizes = Counter(group_of(nodeid) for nodeid in nodeids)

    def rank(nodeid: str) -> tuple[int, int]:
        group = group_of(nodeid)
        named = nodeid.split("::", 1)[0] if group == nodeid else group
        slow = SLOW_FIRST.index(named) if named in SLOW_FIRST else len(SLOW_FIRST)
        return slow, -sizes[group]

    return sorted(nodeids, key=rank)
