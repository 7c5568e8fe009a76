"""Settings for the test suite: Kindler's own, pointed at throwaway databases."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.environment import claim_for_worker, is_isolated, isolate

# KINDLER_TEST_MODE=sqlite runs the tests as a newcomer's Kindler runs: no
# PG_HOST, SQLite alone, no `postgres` alias. Otherwise the test harness
# starts its own PostgreSQL and fills in the port; nothing here may depend on
# a server already running on this machine.
TEST_MODE = os.environ.get("KINDLER_TEST_MODE", "postgres").strip().lower() or "postgres"
if TEST_MODE not in ("postgres", "sqlite"):
    raise RuntimeError(f"KINDLER_TEST_MODE must be postgres or sqlite, not {TEST_MODE!r}")
_DATA = Path(tempfile.mkdtemp(prefix="kindler-test-"))
# Neither the caller's variables nor config/secrets.env: a settings file that
# does not exist, here and in every process the tests start. A process a test
# starts with these settings keeps what that test gave it.
if not is_isolated(os.environ):
    isolate(os.environ, str(_DATA / "secrets.env"))
# An xdist worker (scripts/test runs several) inherits the environment of the
# process that started it: its SQLite files, and the cache beside them, are
# its own all the same. Its children keep what it gave them.
if claim_for_worker(os.environ):
    os.environ["SQLITE_PATH"] = str(_DATA / "kindler.db")
os.environ.setdefault("SQLITE_PATH", str(_DATA / "kindler.db"))
_PG = {
    "PG_HOST": "127.0.0.1",
    "PG_PORT": "1",
    "PG_DATABASE": "kindler",
    "PG_USER": "kindler",
    "PG_PASSWORD": "kindler-test-password",
}
if TEST_MODE == "postgres":
    os.environ.update(_PG)
os.environ.setdefault("SECRET_KEY", "tests-only-" + os.urandom(16).hex())
# The fake k3d, kind and docker read their knobs from the environment; Kindler
# passes its children only what it is told to (servers the tests start too).
os.environ["KINDLER_CHILD_ENV"] = "KINDLER_FAKE_*"

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
