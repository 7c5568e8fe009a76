"""The README answers a newcomer's first questions: another address, the port, a private file."""

from __future__ import annotations

import shlex

from kindler.webserver import split_bind
from tests.docs.pages import ROOT, blocks

README = ROOT / "README.md"


def shell_lines(containing: str) -> list[str]:
    """Return the lines of the README's shell examples that contain a text."""
    return [
        line
        for block in blocks(README)
        if block.language == "sh"
        for line in block.text.splitlines()
        if containing in line
    ]


def test_the_readme_shows_another_address_and_its_allowed_host() -> None:
    (line,) = shell_lines("KINDLER_BIND=")
    words = dict(word.split("=", 1) for word in shlex.split(line) if "=" in word)
    assert (split_bind(words["KINDLER_BIND"]), words["ALLOWED_HOSTS"].split(",")) == (
        ("0.0.0.0", 8080),
        ["kindler.example.lan", "localhost"],
    )


def test_the_postgresql_example_names_every_connection_setting_and_makes_the_file_private() -> None:
    (block,) = [block for block in blocks(README) if "cat > config/secrets.env" in block.text]
    lines = block.text.splitlines()
    names = [line.split("=", 1)[0] for line in lines[1 : lines.index("END")]]
    assert names == ["PG_HOST", "PG_PORT", "PG_DATABASE", "PG_USER", "PG_PASSWORD"]
    assert lines[lines.index("END") + 1] == "chmod 600 config/secrets.env"
