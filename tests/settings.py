"""Settings for the test suite: Kindler's own, pointed at throwaway databases."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# KINDLER_TEST_MODE=sqlite runs the tests as a newcomer's Kindler runs: no
# PG_HOST, SQLite alone, no `postgres` alias. Otherwise the test harness
# starts its own PostgreSQL and fills in the port; nothing here may depend on
# a server already running on this machine.
TEST_MODE = os.environ.get("KINDLER_TEST_MODE", "postgres").strip().lower() or "postgres"
if TEST_MODE not in ("postgres", "sqlite"):
    raise RuntimeError(f"KINDLER_TEST_MODE must be postgres or sqlite, not {TEST_MODE!r}")
_DATA = Path(tempfile.mkdtemp(prefix="kindler-test-"))
os.environ.setdefault("SQLITE_PATH", str(_DATA / "kindler.db"))
_PG = {
    "PG_HOST": "127.0.0.1",
    "PG_PORT": "1",
    "PG_DATABASE": "kindler",
    "PG_USER": "kindler",
    "PG_PASSWORD": "kindler-test-password",
}
for _name, _value in _PG.items():
    if TEST_MODE == "postgres":
        os.environ[_name] = _value
    else:
        # config/secrets.env is read too: an empty value keeps it from naming one.
        os.environ[_name] = ""
if TEST_MODE == "sqlite":
    os.environ.pop("KINDLER_FALLBACK", None)
os.environ.setdefault("SECRET_KEY", "tests-only-" + os.urandom(16).hex())

from kindler.settings import *  # noqa: E402,F403
from kindler.settings import DATABASES  # noqa: E402

DATABASES["sqlite"]["TEST"]["NAME"] = str(_DATA / "test_kindler.db")
if TEST_MODE == "postgres":
    DATABASES["postgres"]["CONN_MAX_AGE"] = 0

KINDLER_HEALTH_INTERVAL = 0.2
# The mirror writes to SQLite behind the tests' backs: off unless a test turns it on.
KINDLER_MIRROR_INTERVAL = 0.0
PG_CONNECT_TIMEOUT = 1.0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Serve static files from the app folders: tests never run collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
