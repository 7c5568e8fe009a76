"""`manage.py ensure_admin`: make sure a first-run person can log in."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError

from kindler.commands import RoutineCommand
from kindler.secrets import read_secret

GENERATED_USER = "admin"


class Command(RoutineCommand):
    help = (
        "Create the admin account, a superuser, from KINDLER_ADMIN_USER and "
        "KINDLER_ADMIN_PASSWORD, or, when no account exists and those are unset, create "
        "'admin' with a generated password and print it once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self.ensure()
        except PermissionDenied as exc:
            # Accounts are read-only while PostgreSQL is away; starting anyway
            # beats refusing to serve, and the next start tries again.
            self.stderr.write(f"No admin account was created: {exc}")

    def ensure(self) -> None:
        """Create the configured or a generated admin account when needed."""
        username = os.environ.get("KINDLER_ADMIN_USER", "")
        password = read_secret("KINDLER_ADMIN_PASSWORD")
        if bool(username) != bool(password):
            raise CommandError(
                "Set both KINDLER_ADMIN_USER and KINDLER_ADMIN_PASSWORD, or neither."
            )
        users = get_user_model()._default_manager
        if username:
            if users.filter(username=username).exists():
                return
            users.create_superuser(username=username, email="", password=password)
            self.stdout.write(f"Created the admin account {username} (from KINDLER_ADMIN_USER).")
            return
        if users.exists():
            return
        password = secrets.token_urlsafe(12)
        users.create_superuser(username=GENERATED_USER, email="", password=password)
        # Printed once, on purpose: the only way in on a first run without configuration.
        self.stdout.write(
            f"Created the admin account. Log in as {GENERATED_USER} with password {password}\n"
            "This is shown only now; change it with: "
            f"scripts/manage changepassword {GENERATED_USER}"
        )
