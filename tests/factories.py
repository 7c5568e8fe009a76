"""Factories for rows the tests need; defaults never collide with each other."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from typing import Any

from clusters.models import Cluster, OperationLog, Registration

_ports = itertools.count(20000, 3)
_names = itertools.count(1)


def cluster_fields(**overrides: Any) -> dict[str, Any]:
    """Return valid fields for a new cluster with host ports no other factory row uses."""
    http = next(_ports)
    fields: dict[str, Any] = {
        "name": f"cluster-{next(_names)}",
        "provider": "k3d",
        "http_port": http,
        "https_port": http + 1,
        "pf_port": http + 2,
    }
    fields.update(overrides)
    return fields


def make_cluster(using: str | None = None, **overrides: Any) -> Cluster:
    """Save and return a valid cluster on the given (or routed) database."""
    cluster = Cluster(**cluster_fields(**overrides))
    cluster.full_clean()
    cluster.save(using=using)
    return cluster


def make_operation(cluster: Cluster, using: str | None = None, **overrides: Any) -> OperationLog:
    """Save and return an operation log entry for cluster."""
    fields: dict[str, Any] = {"cluster_name": cluster.name, "operation": "create"}
    fields.update(overrides)
    operation = OperationLog(**fields)
    operation.save(using=using)
    return operation


def make_superuser(username: str = "admin", password: str = "password", **fields: Any) -> Any:
    """Save and return a superuser on the routed database.

    bulk_create sends no pre_save signal, so this also works on SQLite, where
    account changes are refused during an outage (accounts are mirrored there).
    """
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User

    User.objects.bulk_create(
        [
            User(
                username=username,
                password=make_password(password),
                is_staff=True,
                is_superuser=True,
                **fields,
            )
        ]
    )
    return User.objects.get(username=username)


def make_registration(
    host: str | None = None,
    providers: dict[str, str] | None = None,
    seconds_ago: float = 0.0,
    using: str | None = None,
) -> Registration:
    """Save and return a reconciler's registration, heard from seconds_ago."""
    from django.conf import settings
    from django.utils import timezone

    seen = timezone.now() - timedelta(seconds=seconds_ago)
    rows = Registration.objects.using(using) if using else Registration.objects
    return rows.create(
        key=uuid.uuid4(),
        host=host or settings.KINDLER_HOST_NAME,
        pid=4242,
        version="0.1.0",
        providers={"k3d": "v5.7.4", "kind": "v0.24.0"} if providers is None else providers,
        started_at=seen,
        last_seen=seen,
    )


def make_user(username: str, *groups: str, password: str = "password") -> Any:
    """Save and return a user in the named groups (roles) on the routed database.

    Rows are bulk-created, as make_superuser's are, so this works on SQLite too.
    """
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User

    User.objects.bulk_create([User(username=username, password=make_password(password))])
    user = User.objects.get(username=username)
    User.groups.through.objects.bulk_create(
        [
            User.groups.through(user=user, group=group)
            for group in Group.objects.filter(name__in=groups)
        ]
    )
    return user
