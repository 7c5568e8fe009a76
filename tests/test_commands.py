"""Routine commands (kindler.commands) skip Django's system checks; serve and migrate do not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core import checks
from django.core.management import load_command_class
from django.core.management.base import SystemCheckError

from tests.conftest import BOTH

ROUTINE = [
    ("clusters", "cluster"),
    ("clusters", "ensure_admin"),
    ("clusters", "export_environments"),
    ("clusters", "import_environments"),
    ("kindler.db", "dbstatus"),
    ("kindler.db", "sync_db"),
]


@pytest.fixture
def failing_check() -> Iterator[None]:
    def fail(**kwargs: object) -> list[checks.CheckMessage]:
        return [checks.Error("a check that always fails", id="tests.E001")]

    checks.register(fail)
    yield
    checks.registry.registry.registered_checks.discard(fail)


@pytest.mark.parametrize(("app", "name"), ROUTINE)
def test_routine_commands_run_no_system_checks(app: str, name: str) -> None:
    assert load_command_class(app, name).requires_system_checks == ()


@pytest.mark.django_db(databases=BOTH)
def test_a_failing_check_does_not_stop_a_routine_command(
    failing_check: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # As `manage.py cluster list --json` runs it: parsed, then execute(), which
    # runs the checks first for a command that requires them.
    command = load_command_class("clusters", "cluster")
    options = command.create_parser("manage.py", "cluster").parse_args(["list", "--json"])
    command.execute(**vars(options))
    assert capsys.readouterr().out.strip() == "[]"


@pytest.mark.parametrize(("app", "name"), [("clusters", "serve"), ("kindler.db", "migrate")])
def test_serve_and_migrate_still_run_the_checks(failing_check: None, app: str, name: str) -> None:
    # Run as manage.py would: the failing check stops it before handle() starts anything.
    command = load_command_class(app, name)
    options = command.create_parser("manage.py", name).parse_args([])
    with pytest.raises(SystemCheckError, match=r"tests\.E001"):
        command.execute(**vars(options))
