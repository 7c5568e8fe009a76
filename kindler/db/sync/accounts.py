"""Accounts during an outage: readable from the mirror, never changed.

Users, groups and their permissions are mirrored PostgreSQL -> SQLite, so
people can log in while PostgreSQL is away. Changing an account then is
refused instead of journaled: an account edited in two places cannot be
merged safely (a password reset here, a removal from a group there), and
an outage is not the time to grant access. Logging in still works: the
last_login stamp is written to SQLite only and PostgreSQL keeps its own.

When a SQLite file meets a PostgreSQL that is new, replaced or restored,
the accounts PostgreSQL lacks are carried into it (carry_accounts) before
the mirror copies PostgreSQL's accounts back.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db import connections, transaction
from django.db.models import Model
from django.db.models.signals import m2m_changed, pre_delete, pre_save

from kindler.db import POSTGRES, SQLITE
from kindler.db.sync.journal import journaling
from kindler.db.sync.locks import hold_global_lock

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


def carry_accounts(*, dry_run: bool = False) -> int:
    """Copy into PostgreSQL the users and groups it lacks (by name); return rows written.

    A user or group PostgreSQL already has keeps PostgreSQL's copy (its
    password, its groups). New ones come with their password hash, group
    memberships and permissions, by natural key; a user keeps its id when
    PostgreSQL has it free, so sessions stay valid.
    """
    lite = connections[SQLITE].cursor()
    written = 0
    with transaction.atomic(using=POSTGRES), connections[POSTGRES].cursor() as pg:
        hold_global_lock(pg)
        groups, added = _carry_named(lite, pg, Group, "name")
        written += len(added)
        users, new_users = _carry_named(lite, pg, User, "username")
        written += len(new_users)
        permissions = _permission_ids(lite, pg)
        written += _carry_links(
            lite, pg, "auth_user_groups", "user_id", "group_id", users, groups, new_users
        )
        written += _carry_links(
            lite,
            pg,
            "auth_user_user_permissions",
            "user_id",
            "permission_id",
            users,
            permissions,
            new_users,
        )
        written += _carry_links(
            lite,
            pg,
            "auth_group_permissions",
            "group_id",
            "permission_id",
            groups,
            permissions,
            added,
        )
        if dry_run:
            transaction.set_rollback(True, using=POSTGRES)
    return written


def _carry_named(
    lite: Any, pg: Any, model: type[Model], key: str
) -> tuple[dict[int, int], set[int]]:
    """Insert the rows PostgreSQL lacks by key; return local id -> PostgreSQL id, and the new."""
    table = model._meta.db_table
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(f'"{f.column}"' for f in fields)
    lite.execute(f"SELECT id, {columns} FROM {table}")
    local = lite.fetchall()
    pg.execute(f'SELECT id, "{key}" FROM {table}')
    existing = {name: pk for pk, name in pg.fetchall()}
    taken = set(existing.values())
    key_at = [f.column for f in fields].index(key)
    ids: dict[int, int] = {}
    new: set[int] = set()
    casts = ", ".join(f"%s::{f.db_type(connections[POSTGRES])}" for f in fields)
    for pk, *values in local:
        name = values[key_at]
        if name in existing:
            ids[pk] = existing[name]
            continue
        if pk in taken:
            pg.execute(f"INSERT INTO {table} ({columns}) VALUES ({casts}) RETURNING id", values)
        else:
            pg.execute(
                f"INSERT INTO {table} (id, {columns}) VALUES (%s, {casts}) RETURNING id",
                [pk, *values],
            )
        ids[pk] = int(pg.fetchone()[0])
        taken.add(ids[pk])
        new.add(pk)
    if new:
        pg.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"GREATEST((SELECT max(id) FROM {table}), 1))"
        )
    return ids, new


def _permission_ids(lite: Any, pg: Any) -> dict[int, int]:
    """Return SQLite's permission id -> PostgreSQL's, matched by natural key."""
    query = (
        "SELECT p.id, ct.app_label, ct.model, p.codename FROM auth_permission p "
        "JOIN django_content_type ct ON ct.id = p.content_type_id"
    )
    pg.execute(query)
    remote = {tuple(row[1:]): row[0] for row in pg.fetchall()}
    lite.execute(query)
    return {row[0]: remote[tuple(row[1:])] for row in lite.fetchall() if tuple(row[1:]) in remote}


def _carry_links(
    lite: Any,
    pg: Any,
    table: str,
    owner: str,
    target: str,
    owners: dict[int, int],
    targets: dict[int, int],
    new_owners: set[int],
) -> int:
    """Copy the links of owners new to PostgreSQL (their groups, their permissions)."""
    lite.execute(f"SELECT {owner}, {target} FROM {table}")
    rows = [
        (owners[a], targets[b])
        for a, b in lite.fetchall()
        if a in new_owners and a in owners and b in targets
    ]
    for row in rows:
        pg.execute(
            f"INSERT INTO {table} ({owner}, {target}) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            row,
        )
    return len(rows)
