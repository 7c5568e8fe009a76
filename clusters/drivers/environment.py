"""The environment of the processes Kindler starts: what they need, never Kindler's secrets.

k3d, kind and the hooks get PATH, HOME, the locale, Docker's, kubectl's and the
providers' own variables, and the names KINDLER_CHILD_ENV lists (shell-style
patterns allowed). A hook's output is shown to every signed-in user, so a
secret in its environment is one `env` away from the operation log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fnmatch import fnmatchcase

from django.conf import settings

PASSED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        # Rootless Docker's socket lives here; ssh:// Docker hosts need the agent.
        "XDG_RUNTIME_DIR",
        "SSH_AUTH_SOCK",
        "KUBECONFIG",
    }
)
PASSED_PREFIXES = ("LC_", "DOCKER_", "K3D_", "KIND_")
# Kindler's own secrets never reach a child, whatever KINDLER_CHILD_ENV says.
NEVER_PASSED = frozenset(
    {"SECRET_KEY", "PG_PASSWORD", "KINDLER_API_TOKEN", "KINDLER_ADMIN_PASSWORD"}
)


def passed(name: str, named: list[str]) -> bool:
    """Return True when a variable of Kindler's environment goes to its children."""
    if name in NEVER_PASSED:
        return False
    if name in PASSED or name.startswith(PASSED_PREFIXES):
        return True
    return any(fnmatchcase(name, pattern) for pattern in named)


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a child process, with extra added."""
    named = [pattern.strip() for pattern in settings.KINDLER_CHILD_ENV if pattern.strip()]
    env = {name: value for name, value in os.environ.items() if passed(name, named)}
    env.update(extra or {})
    return env
