"""Settings for the test suite: Kindler's own, pointed at throwaway databases."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The test harness starts its own PostgreSQL and fills in the port; nothing
# here may depend on a server already running on this machine.
_DATA = Path(tempfile.mkdtemp(prefix="kindler-test-"))
os.environ.setdefault("SQLITE_PATH", str(_DATA / "kindler.db"))
os.environ["PG_HOST"] = "127.0.0.1"
os.environ["PG_PORT"] = "1"
os.environ["PG_DATABASE"] = "kindler"
os.environ["PG_USER"] = "kindler"
os.environ["PG_PASSWORD"] = "kindler-test-password"
os.environ.setdefault("SECRET_KEY", "tests-only-" + os.urandom(16).hex())

from kindler.settings import *  # noqa: E402,F403
from kindler.settings import DATABASES  # noqa: E402

DATABASES["sqlite"]["TEST"]["NAME"] = str(_DATA / "test_kindler.db")
DATABASES["postgres"]["CONN_MAX_AGE"] = 0

KINDLER_HEALTH_INTERVAL = 0.2
# The mirror writes to SQLite behind the tests' backs: off unless a test turns it on.
KINDLER_MIRROR_INTERVAL = 0.0
PG_CONNECT_TIMEOUT = 1.0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Serve static files from the app folders: tests never run collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
