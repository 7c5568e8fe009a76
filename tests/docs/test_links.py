"""Links between the docs resolve, images exist, and benchmarks live on one page."""

from __future__ import annotations

import re
from pathlib import Path

from tests.browser.test_screenshots import PAGES
from tests.docs.pages import DOCS, ROOT, anchors, blocks, links, pages


def broken_links(page: Path) -> list[str]:
    """Return the relative links of a page whose file or heading does not exist."""
    broken: list[str] = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: checked by nobody here
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(target)
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(target)
    return broken


def test_every_link_and_anchor_resolves() -> None:
    broken = {page.name: broken_links(page) for page in pages() if broken_links(page)}
    assert broken == {}


def test_the_index_links_every_page() -> None:
    index = DOCS / "README.md"
    linked = {target.partition("#")[0] for target in links(index)}
    expected = {page.name for page in DOCS.glob("*.md") if page != index}
    assert expected - linked == set()


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_every_page_in_docs_has_one_title() -> None:
    titles = {
        page.name: [line for line in page.read_text().splitlines() if line.startswith("# ")]
        for page in DOCS.glob("*.md")
    }
    assert {name: len(found) for name, found in titles.items() if len(found) != 1} == {}


def test_every_benchmark_is_described_on_the_benchmarks_page() -> None:
    text = (DOCS / "benchmarks.md").read_text()
    scripts = sorted(
        path.name
        for path in (ROOT / "bench").glob("*.py")
        if path.read_text().startswith('"""') and "__main__" in path.read_text()
    )
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    described = [name for name in scripts if any(h.endswith(f"bench/{name}") for h in headings)]
    assert scripts == described


def test_benchmarks_are_run_from_the_benchmarks_page_only() -> None:
    running = {
        block.where
        for page in pages()
        if page.name != "benchmarks.md"
        for block in blocks(page)
        if re.search(r"\bbench/\w+\.py", block.text)
    }
    assert running == set()


def test_the_secrets_example_points_to_pages_that_exist() -> None:
    text = (ROOT / "config" / "secrets.env.example").read_text()
    named = re.findall(r"\b((?:docs|compose|README\.d)/[\w./-]*\w)(?:#([\w-]+))?", text)
    assert ("docs/configuration.md", "") in named
    missing = [
        f"{path}#{anchor}" if anchor else path
        for path, anchor in named
        if not (ROOT / path).exists() or (anchor and anchor not in anchors(ROOT / path))
    ]
    assert missing == []


def test_every_screenshot_is_shown_on_a_page() -> None:
    shown = {
        (page.parent / target).resolve()
        for page in pages()
        for target in links(page)
        if target.endswith(".png")
    }
    images = set((DOCS / "images").glob("*.png"))
    assert images
    assert images - shown == set()


def test_the_committed_screenshots_are_the_ones_the_browser_test_takes() -> None:
    assert {path.name for path in (DOCS / "images").glob("*.png")} == set(PAGES)
