"""Tell a lost PostgreSQL apart from every other database error."""

from __future__ import annotations

import re

import psycopg2
from django.conf import settings

_PASSWORD_ASSIGNMENT = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)


def is_postgres_outage(exc: BaseException | None) -> bool:
    """Return True when exc, or what caused it, says PostgreSQL cannot be used."""
    while exc is not None:
        if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def mask_secrets(text: str) -> str:
    """Return text with the configured PostgreSQL password replaced by ***."""
    password = settings.DATABASES.get("postgres", {}).get("PASSWORD") or ""
    if password:
        text = text.replace(password, "***")
    return _PASSWORD_ASSIGNMENT.sub(r"\1***", text)


def describe(exc: BaseException) -> str:
    """Return a one-line, secret-free description of a database error."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    return mask_secrets(message)
