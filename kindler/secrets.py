"""Secrets from the environment, or from a file named by the same variable plus _FILE.

Docker secrets and Vault agents hand a secret over as a file
(/run/secrets/pg_password), not as an environment variable every child
process and `docker inspect` can see. So each secret setting NAME may
instead be given as NAME_FILE, the path of a file that holds it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured


def read_secret(name: str, environ: Mapping[str, str] | None = None) -> str:
    """Return the secret NAME from the environment or from the file NAME_FILE names ("" if unset).

    Trailing newlines of the file are dropped (editors and `echo` add one).
    Setting both forms, or naming a file that cannot be read or is empty,
    raises ImproperlyConfigured naming the file, never what it holds.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(name, "")
    path = environ.get(f"{name}_FILE", "")
    if not path:
        return value
    if value:
        raise ImproperlyConfigured(f"Set {name} or {name}_FILE, not both.")
    try:
        with open(path, encoding="utf-8") as handle:
            content = handle.read().rstrip("\r\n")
    except OSError as exc:
        raise ImproperlyConfigured(
            f"Cannot read {name}_FILE {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise ImproperlyConfigured(f"{name}_FILE {path} is not UTF-8 text") from None
    if not content:
        raise ImproperlyConfigured(f"{name}_FILE {path} is empty")
    return content
