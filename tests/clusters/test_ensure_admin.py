"""`manage.py ensure_admin`: a first run leaves a person able to log in."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from kindler.db.failover.pinning import pinned_alias
from tests.conftest import BOTH
from tests.factories import make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)


def run(monkeypatch: pytest.MonkeyPatch, user: str = "", password: str = "") -> str:
    monkeypatch.setenv("KINDLER_ADMIN_USER", user)
    monkeypatch.setenv("KINDLER_ADMIN_PASSWORD", password)
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    return out.getvalue()


def test_the_account_is_created_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    output = run(monkeypatch, "ops", "correct-horse-battery")
    assert output == "Created the admin account ops (from KINDLER_ADMIN_USER).\n"
    user = authenticate(username="ops", password="correct-horse-battery")
    assert user is not None
    assert user.is_superuser


def test_an_existing_account_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    make_superuser("ops", "changed-by-hand")
    assert run(monkeypatch, "ops", "from-the-environment") == ""
    assert authenticate(username="ops", password="changed-by-hand") is not None


def test_a_user_without_a_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CommandError, match=r"^Set both KINDLER_ADMIN_USER and KINDLER_ADMIN_"):
        run(monkeypatch, "ops", "")


def test_a_first_run_generates_and_prints_a_password_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = run(monkeypatch)
    match = re.fullmatch(
        r"Created the admin account\. Log in as admin with password (\S+)\n"
        r"This is shown only now; change it with: scripts/manage changepassword admin\n",
        output,
    )
    assert match is not None
    assert authenticate(username="admin", password=match.group(1)) is not None
    assert run(monkeypatch) == ""


def test_nothing_is_generated_when_an_account_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    make_superuser("someone")
    assert run(monkeypatch) == ""
    assert list(User.objects.values_list("username", flat=True)) == ["someone"]


@pytest.mark.postgres
def test_no_account_is_created_while_accounts_are_read_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KINDLER_ADMIN_USER", "")
    monkeypatch.setenv("KINDLER_ADMIN_PASSWORD", "")
    out, err = StringIO(), StringIO()
    with pinned_alias("sqlite"):
        call_command("ensure_admin", stdout=out, stderr=err)
        assert User.objects.count() == 0
    assert (out.getvalue(), err.getvalue()) == (
        "",
        "No admin account was created: Accounts cannot be changed while PostgreSQL is "
        "unreachable: Kindler is running on its local copy. Try again once PostgreSQL is back.\n",
    )
