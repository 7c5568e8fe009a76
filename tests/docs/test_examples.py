"""Every shell example in README.md and docs/ runs as written, or says why it cannot."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.pages import ROOT, SHELL_LANGUAGES, Block, blocks, pages
from tests.docs.sessions import Session, namespaces_available

NEEDS = {"server", "postgres"}


def runnable(page: Path) -> list[Block]:
    return [
        block
        for block in blocks(page)
        if block.language in SHELL_LANGUAGES and block.annotation != "no-test"
    ]


PAGES_WITH_EXAMPLES = [page for page in pages() if runnable(page)]


def test_every_block_names_its_language() -> None:
    unnamed = [block.where for page in pages() for block in blocks(page) if not block.language]
    assert unnamed == []


def test_no_example_runs_manage_py_with_a_bare_python() -> None:
    bare = [
        block.where
        for page in pages()
        for block in blocks(page)
        if re.search(r"(?<![/\w])python3? manage\.py", block.text)
    ]
    assert bare == []


def test_every_skipped_example_says_why() -> None:
    skipped = [block for page in pages() for block in blocks(page) if block.annotation == "no-test"]
    assert skipped
    assert [block.where for block in skipped if len(block.value) < 10] == []


def test_annotations_are_on_shell_examples_only() -> None:
    misplaced = [
        block.where
        for page in pages()
        for block in blocks(page)
        if block.annotation and block.language not in SHELL_LANGUAGES
    ]
    assert misplaced == []


def test_every_example_that_needs_something_names_a_known_need() -> None:
    unknown = [
        (block.where, block.value)
        for page in pages()
        for block in blocks(page)
        if block.annotation == "test" and block.value not in NEEDS
    ]
    assert unknown == []


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    if not namespaces_available():
        pytest.skip("running the examples needs root for a private network namespace (unshare)")
    started = Session(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", PAGES_WITH_EXAMPLES, ids=[str(page.relative_to(ROOT)) for page in PAGES_WITH_EXAMPLES]
)
def test_the_examples_run_as_written(page: Path, session: Session) -> None:
    for block in runnable(page):
        result = session.run(block)
        assert result.returncode == 0, (
            f"{block.where} failed with status {result.returncode}:\n{block.text}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
            f"server:\n{session.server_log()[-3000:]}"
        )
