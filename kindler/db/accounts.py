"""Accounts during an outage: readable from the mirror, never changed.

Users, groups and their permissions are mirrored PostgreSQL -> SQLite, so
people can log in while PostgreSQL is away. Changing an account then is
refused instead of journaled: an account edited in two places cannot be
merged safely (a password reset here, a removal from a group there), and
an outage is not the time to grant access. Logging in still works: the
last_login stamp is written to SQLite only and PostgreSQL keeps its own.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models.signals import m2m_changed, pre_delete, pre_save

from kindler.db import SQLITE
from kindler.db.journal import journaling

REFUSED = (
    "Accounts cannot be changed while PostgreSQL is unreachable: Kindler is "
    "running on its local copy. Try again once PostgreSQL is back."
)


class AccountsReadOnly(PermissionDenied):
    """Raised when an account change is attempted during an outage."""


def _refuse(using: str | None) -> None:
    if using == SQLITE and journaling():
        raise AccountsReadOnly(REFUSED)


def refuse_save(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
    """Refuse to save a user or group on SQLite in place of PostgreSQL."""
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    _refuse(using)


def refuse_delete(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
    """Refuse to delete a user or group on SQLite in place of PostgreSQL."""
    _refuse(using)


def refuse_m2m(
    sender: Any, instance: Any, action: str, using: str | None = None, **kw: Any
) -> None:
    """Refuse group and permission changes on SQLite in place of PostgreSQL."""
    if action.startswith("pre_"):
        _refuse(using)


def connect() -> None:
    """Install the refusals on User, Group and their many-to-many tables."""
    for model in (User, Group):
        pre_save.connect(refuse_save, sender=model, dispatch_uid=f"kindler.accounts.{model}")
        pre_delete.connect(refuse_delete, sender=model, dispatch_uid=f"kindler.accounts.d{model}")
    for through in (
        User.groups.through,
        User.user_permissions.through,
        Group.permissions.through,
    ):
        m2m_changed.connect(refuse_m2m, sender=through, dispatch_uid=f"kindler.accounts.{through}")
