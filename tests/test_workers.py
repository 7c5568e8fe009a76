"""scripts/test's xdist workers get the tests by file and group, the slowest first."""

from __future__ import annotations

from tests.test_chaos import SLICES
from tests.workers import SLOW_FIRST, group_of, in_queue_order


def test_a_files_tests_are_one_group() -> None:
    assert [group_of("tests/test_views.py::test_a"), group_of("tests/test_views.py::test_b")] == [
        "tests/test_views.py",
        "tests/test_views.py",
    ]


def test_each_patroni_test_is_a_group_of_its_own() -> None:
    assert [
        group_of("tests/db/sync/test_patroni.py::test_a"),
        group_of("tests/db/sync/test_patroni.py::test_b"),
    ] == ["tests/db/sync/test_patroni.py::test_a", "tests/db/sync/test_patroni.py::test_b"]


def test_the_chaos_tests_are_a_group_per_slice_of_the_run() -> None:
    assert [
        group_of("tests/test_chaos.py::test_a[outages]"),
        group_of("tests/test_chaos.py::test_b[outages]"),
        group_of("tests/test_chaos.py::test_a[sqlite]"),
        group_of("tests/test_chaos.py::test_haproxy_config"),
    ] == [
        "tests/test_chaos.py[outages]",
        "tests/test_chaos.py[outages]",
        "tests/test_chaos.py[sqlite]",
        "tests/test_chaos.py",
    ]


def test_every_chaos_slice_is_named_among_the_slowest() -> None:
    slices = {f"tests/test_chaos.py[{name}]" for name in SLICES}
    assert slices - set(SLOW_FIRST) == set()


def test_each_docs_example_is_a_group_of_its_own() -> None:
    nodeid = "tests/docs/test_examples.py::test_the_examples_run_as_written[README.md]"
    assert group_of(nodeid) == nodeid


def test_the_slowest_groups_come_first_then_the_largest() -> None:
    nodeids = [
        "tests/test_a.py::test_1",
        "tests/test_b.py::test_1",
        "tests/test_b.py::test_2",
        "tests/docs/test_examples.py::test_the_examples_run_as_written[README.md]",
        "tests/test_chaos.py::test_1",
        "tests/test_chaos.py::test_2[sqlite]",
        "tests/db/sync/test_patroni.py::test_1",
        "tests/test_chaos.py::test_1[postgres]",
        "tests/test_chaos.py::test_2[postgres]",
        "tests/browser/test_original_webui.py::test_1",
    ]
    assert in_queue_order(nodeids) == [
        "tests/test_chaos.py::test_1[postgres]",
        "tests/test_chaos.py::test_2[postgres]",
        "tests/browser/test_original_webui.py::test_1",
        "tests/docs/test_examples.py::test_the_examples_run_as_written[README.md]",
        "tests/db/sync/test_patroni.py::test_1",
        "tests/test_chaos.py::test_2[sqlite]",
        "tests/test_b.py::test_1",
        "tests/test_b.py::test_2",
        "tests/test_a.py::test_1",
        "tests/test_chaos.py::test_1",
    ]
