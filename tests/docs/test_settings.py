"""Every setting the code reads is documented once, and every documented one is read."""

from __future__ import annotations

from tests.docs.pages import DOCS, pages, settings_rows
from tests.docs.settings_read import settings_read

CONFIGURATION = DOCS / "configuration.md"


def test_every_setting_the_code_reads_has_a_row() -> None:
    documented = set(settings_rows(CONFIGURATION))
    missing = {name: files for name, files in settings_read().items() if name not in documented}
    report = "\n".join(
        f"| `{name}` | ? | ? |   <- read by {', '.join(sorted(files))}"
        for name, files in sorted(missing.items())
    )
    assert missing == {}, f"Add these rows to docs/configuration.md's settings table:\n{report}"


def test_every_documented_setting_is_read_by_the_code() -> None:
    read = settings_read()
    extra = sorted(name for name in settings_rows(CONFIGURATION) if name not in read)
    assert extra == [], f"docs/configuration.md documents settings no code reads: {extra}"


def test_each_setting_has_exactly_one_row() -> None:
    rows = settings_rows(CONFIGURATION)
    repeated = sorted({name for name in rows if rows.count(name) > 1})
    assert repeated == []


def test_no_other_page_has_a_settings_table() -> None:
    elsewhere = {
        str(page.name): settings_rows(page)
        for page in pages()
        if page != CONFIGURATION and settings_rows(page)
    }
    assert elsewhere == {}, f"Move these rows into docs/configuration.md: {elsewhere}"


def test_the_settings_table_has_name_default_and_meaning() -> None:
    lines = CONFIGURATION.read_text().splitlines()
    header = lines.index("## Settings")
    table = [line for line in lines[header:] if line.startswith("| Name ")]
    assert table == ["| Name | Default | Meaning |"]
