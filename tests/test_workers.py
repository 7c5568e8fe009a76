"""scripts/test's xdist workers get the tests by file and group, the slowest first."""

from __future__ import annotations

from tests.workers import group_of, in_queue_order


def test_a_files_tests_are_one_group() -> None:
    assert [group_of("tests/test_views.py::test_a"), group_of("tests/test_views.py::test_b")] == [
        "tests/test_views.py",
        "tests/test_views.py",
    ]


def test_the_patroni_and_chaos_tests_share_one_group() -> None:
    assert {
        group_of("tests/db/sync/test_patroni.py::test_a"),
        group_of("tests/test_chaos.py::test_b"),
    } == {"clusters of servers"}


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
        "tests/browser/test_original_webui.py::test_1",
    ]
    assert in_queue_order(nodeids) == [
        "tests/test_chaos.py::test_1",
        "tests/docs/test_examples.py::test_the_examples_run_as_written[README.md]",
        "tests/browser/test_original_webui.py::test_1",
        "tests/test_b.py::test_1",
        "tests/test_b.py::test_2",
        "tests/test_a.py::test_1",
    ]
