"""The documentation pages as data: their fenced blocks, links, headings and settings table."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SHELL_LANGUAGES = {"sh", "bash", "shell"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`]*)$")
ANNOTATION = re.compile(r"^\s*<!--\s*(?P<kind>no-test|test):(?P<value>.*?)-->\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(?P<title>.+?)\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced code block and the annotation on the line before it."""

    page: Path
    line: int
    language: str
    text: str
    annotation: str  # "", "no-test" or "test"
    value: str  # the skip reason, or what the block needs (server, postgres)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """Return README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """Return the fenced blocks of a page, in order."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent = opening["indent"]
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        previous = index - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        marked = ANNOTATION.match(lines[previous]) if previous >= 0 else None
        found.append(
            Block(
                page=page,
                line=index + 1,
                language=opening["info"].strip(),
                text="\n".join(body) + "\n",
                annotation=marked["kind"] if marked else "",
                value=marked["value"].strip() if marked else "",
            )
        )
        index = end + 1
    return found


def prose(page: Path) -> str:
    """Return the page without its fenced blocks (links and headings live there)."""
    kept: list[str] = []
    inside = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            kept.append(line)
    return "\n".join(kept)


def links(page: Path) -> list[str]:
    """Return every link and image target of a page's prose."""
    return [match["target"] for match in LINK.finditer(prose(page))]


def slug(title: str) -> str:
    """Return the anchor GitHub gives a heading."""
    text = unicodedata.normalize("NFKC", title).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Return the anchors of a page's headings."""
    found: set[str] = set()
    for line in prose(page).splitlines():
        heading = HEADING.match(line)
        if heading:
            found.add(slug(heading["title"]))
    return found


def settings_rows(page: Path) -> list[str]:
    """Return the names in the first column of every settings-like table row of a page.

    A settings row starts with a backquoted upper-case name, | `PG_HOST` | ... |, in a table
    whose first column is headed "Name". Tables headed otherwise ("Hook variable") list what
    something other than Kindler reads, such as the example hooks.
    """
    names: list[str] = []
    header = ""
    for line in prose(page).splitlines():
        if not line.startswith("|"):
            header = ""
            continue
        if not header:
            header = line.strip("| ").split("|")[0].strip()
            continue
        row = re.match(r"^\|\s*`(?P<name>[A-Z][A-Z0-9_]*)`\s*\|", line)
        if row and header == "Name":
            names.append(row["name"])
    return names
