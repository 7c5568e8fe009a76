"""The environment of the tests and of every Kindler process they start.

Nothing of the person running the suite reaches them: not their PG_*, KINDLER_*,
SQLITE_* or SECRET_KEY variables, and not their config/secrets.env (the tests
name a temporary file instead, through KINDLER_SECRETS_FILE). Otherwise the
suite would connect to their own PostgreSQL, or fail on their settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

SETTING_PREFIXES = ("PG_", "KINDLER_", "SQLITE_", "PROMETHEUS_", "HAPROXY_STATS_")
SETTING_NAMES = frozenset(
    {
        "ALLOWED_HOSTS",
        "CSRF_TRUSTED_ORIGINS",
        "DEBUG",
        "DOCKER_GID",
        "SECRET_KEY",
        "SECRET_KEY_FILE",
        "TIME_ZONE",
    }
)
# What picks how the suite runs and where its tools are: the harness's own knobs.
HARNESS = frozenset(
    {
        "KINDLER_TEST_MODE",
        "KINDLER_TEST_MODES",
        "KINDLER_TEST_ISOLATED",
        "KINDLER_TEST_WORKER",
        "KINDLER_TEST_WORKERS",
        "KINDLER_PG_BINDIR",
        "KINDLER_PGBOUNCER",
        "KINDLER_SCREENSHOTS",
        "PYENV_ROOT",
    }
)
# Of those, the ones that pick what a run of the suite does (and pytest's own
# options): the runs, scripts and Kindler processes the tests start get none
# of the caller's, so `KINDLER_TEST_MODES=sqlite scripts/test` tests the same
# loop as `scripts/test`. A test that wants one names it.
RUN_KNOBS = frozenset(
    {
        "KINDLER_TEST_MODE",
        "KINDLER_TEST_MODES",
        "KINDLER_TEST_WORKERS",
        "KINDLER_SCREENSHOTS",
        "PYTEST_ADDOPTS",
    }
)
SECRETS_FILE = "KINDLER_SECRETS_FILE"
ISOLATED = "KINDLER_TEST_ISOLATED"
# The xdist worker whose settings the environment holds (tests/settings.py).
WORKER = "KINDLER_TEST_WORKER"


def is_setting(name: str) -> bool:
    """Return whether name is a Kindler setting (and no knob of the test harness)."""
    if name in HARNESS:
        return False
    return name in SETTING_NAMES or name.startswith(SETTING_PREFIXES)


def isolate(environ: MutableMapping[str, str], secrets_file: str) -> None:
    """Drop the caller's settings from environ and name secrets_file as the settings file."""
    for name in [name for name in environ if is_setting(name)]:
        del environ[name]
    environ[SECRETS_FILE] = secrets_file
    environ[ISOLATED] = "1"


def is_isolated(environ: Mapping[str, str]) -> bool:
    """Return whether environ is a test process's, isolated already by the one that started it."""
    return environ.get(ISOLATED) == "1" and SECRETS_FILE in environ


def claim_for_worker(environ: MutableMapping[str, str]) -> bool:
    """Mark environ as this xdist worker's; return True when it was another process's until now.

    A worker inherits the environment of the pytest that started it, and the
    processes a worker starts inherit the worker's.
    """
    worker = environ.get("PYTEST_XDIST_WORKER", "")
    if not worker or environ.get(WORKER) == worker:
        return False
    environ[WORKER] = worker
    return True


def child_environ(**extra: str) -> dict[str, str]:
    """Return the tests' environment without any setting but their settings file, plus extra.

    For a Kindler process (or a script, or a run of pytest) that must read
    only what the test gives it: no setting and none of the RUN_KNOBS. The
    settings file stays named, or the process would read config/secrets.env.
    """
    kept = {
        name: value
        for name, value in os.environ.items()
        if not is_setting(name) and name not in RUN_KNOBS
    }
    kept.pop("DJANGO_SETTINGS_MODULE", None)
    kept[SECRETS_FILE] = os.environ[SECRETS_FILE]
    return {**kept, **extra}
