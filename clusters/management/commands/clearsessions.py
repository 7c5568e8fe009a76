"""`manage.py clearsessions`: remove expired sessions, as Django's own command does.

Django's command comes with django.contrib.sessions, which Kindler does not
install: its sessions are files beside the SQLite file, kept by the session
engine alone.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Remove expired sessions (the files of the file session engine)."

    def handle(self, *args: Any, **options: Any) -> None:
        engine = import_module(settings.SESSION_ENGINE)
        try:
            engine.SessionStore.clear_expired()
        except NotImplementedError:
            raise CommandError(
                f"Session engine {settings.SESSION_ENGINE} cannot clear expired sessions."
            ) from None
