"""How scripts/test shares the tests among its pytest-xdist workers (--dist loadfile).

A file's tests stay together on one worker, so a module fixture (an earlier
checkout, a compose project) is made once. The docs examples and the Patroni
tests, each a minute or so and independent (a Patroni cluster of its own per
test), spread over all of them; so do the slices of the short chaos run
(tests/test_chaos.py), each a module fixture of its own with its own
PostgreSQL, HAProxy and Kindler: their tests stay together by slice. The
servers of one share nothing with another's, and the bounds the chaos and
Patroni tests hold (a request within 6 s, a failover within a minute) have
held on this 2-core machine with a second full run beside them. The longest
groups start first, so that none is left to run alone at the end while the
other workers idle.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from xdist.scheduler import LoadFileScheduling

# Files whose tests share no module fixture and take a minute or so each.
SPREAD = ("tests/docs/test_examples.py", "tests/db/sync/test_patroni.py")
# Files whose tests share a module fixture per parameter (test_x[slice]): a group per parameter.
BY_PARAMETER = ("tests/test_chaos.py",)
# Longest first, as measured with --durations in PostgreSQL mode: a group,
# or a file for each group of its tests.
SLOW_FIRST = (
    "tests/test_chaos.py[postgres]",
    # 43 s, or 100 s when the instance stays on SQLite after "SQLite read-only".
    "tests/test_chaos.py[restarts]",
    "tests/browser/test_original_webui.py",
    "tests/test_chaos.py[outages]",
    "tests/test_isolation.py",
    "tests/docs/test_examples.py",
    "tests/test_rolling_upgrade.py",
    "tests/db/sync/test_earlier_journal.py",
    "tests/test_chaos.py[restores]",
    "tests/db/sync/test_patroni.py",
    "tests/test_chaos.py[sqlite]",
    "tests/db/sync/test_instances.py",
    "tests/db/failover/test_hosts.py",
    "tests/db/sync/test_replay.py",
)


def group_of(nodeid: str) -> str:
    """Return the group of the test nodeid: its file, its file and parameter, or itself."""
    path = nodeid.split("::", 1)[0]
    if path in SPREAD:
        return nodeid
    if path in BY_PARAMETER and nodeid.endswith("]"):
        return path + nodeid[nodeid.index("[") :]
    return path


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
        named = group if group in SLOW_FIRST else nodeid.split("::", 1)[0]
        slow = SLOW_FIRST.index(named) if named in SLOW_FIRST else len(SLOW_FIRST)
        return slow, -sizes[group]

    return sorted(nodeids, key=rank)
