"""Kindler's settings, read from the environment and config/secrets.env."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from kindler.db.failover.hosts import parse_hosts
from kindler.secret_key import load_or_create
from kindler.secrets import read_secret

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Real environment variables win over the file (read_env does not overwrite).
# KINDLER_SECRETS_FILE names another file: the test suite points it at a
# temporary one, so a person's own configuration never reaches the tests.
KINDLER_SECRETS_FILE = Path(
    os.environ.get("KINDLER_SECRETS_FILE") or BASE_DIR / "config" / "secrets.env"
)
environ.Env.read_env(KINDLER_SECRETS_FILE)

SQLITE_PATH = Path(env.str("SQLITE_PATH", default=str(BASE_DIR / "data" / "kindler.db")))
# Private when Kindler makes it: the folder holds the database, sessions and keys.
SQLITE_PATH.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

# Every secret may also come from a file named by NAME_FILE (kindler/secrets.py).
SECRET_KEY = read_secret("SECRET_KEY") or load_or_create(SQLITE_PATH.parent / "secret_key")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "kindler.db",
    "clusters",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "kindler.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # 400 to a NUL character in the URL, which PostgreSQL cannot compare.
    "clusters.middleware.NulCharacterMiddleware",
    "kindler.db.failover.middleware.DatabaseFailoverMiddleware",
    # API requests with a bearer token skip the session, CSRF and message
    # middleware below: they use none of it (clusters/middleware.py).
    "clusters.middleware.TokenApiMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Django's CSRF check, also under axios's names (see KINDLER_XSRF_* below).
    "clusters.middleware.AxiosCsrfNamesMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # 429 to a sign-in after too many failures (clusters/ratelimit.py).
    "clusters.ratelimit.LoginThrottleMiddleware",
    "clusters.middleware.NoStoreMiddleware",
    # Everything needs a login except views marked login_not_required
    # (/api/health, the login page; API views answer 401 JSON themselves).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "kindler.urls"
WSGI_APPLICATION = "kindler.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "kindler.db.context_processors.database",
            ],
        },
    },
]

# Databases. `default` is a dummy on purpose: Kindler has two real aliases and
# a router choosing between them, so anything that reaches for `default`
# (a bare transaction.atomic(), a command without --database) fails loudly
# instead of silently writing to the wrong place.
PG_CONNECT_TIMEOUT = env.float("PG_CONNECT_TIMEOUT", default=2.0)
PG_STATEMENT_TIMEOUT = env.float("PG_STATEMENT_TIMEOUT", default=5.0)
# A row or table someone holds locked fails a statement after this long
# (a 503 "busy"), well before the statement timeout.
PG_LOCK_TIMEOUT = env.float("PG_LOCK_TIMEOUT", default=2.0)
# How long a write waits for SQLite's write lock before answering 503.
SQLITE_BUSY_TIMEOUT = env.float("SQLITE_BUSY_TIMEOUT", default=3.0)
# Every wait of one request together (connect, each statement, a probe, then
# SQLite's write lock): past it the request answers 503 "PostgreSQL is too slow".
KINDLER_REQUEST_DEADLINE = env.float("KINDLER_REQUEST_DEADLINE", default=11.0)
KINDLER_HEALTH_INTERVAL = env.float("KINDLER_HEALTH_INTERVAL", default=1.0)
# A failed recovery waits before the next one, from KINDLER_HEALTH_INTERVAL
# doubling up to this many seconds, so a PostgreSQL that answers but cannot
# take the replay does not make the instance flap.
KINDLER_RECOVERY_BACKOFF_MAX = env.float("KINDLER_RECOVERY_BACKOFF_MAX", default=30.0)
# How often the health monitor keeps a sample (latency, journal length) for
# the System page's charts; the last 1,500 are kept.
KINDLER_SAMPLE_INTERVAL = env.float("KINDLER_SAMPLE_INTERVAL", default=60.0)

DATABASES: dict[str, dict[str, Any]] = {
    "default": {"ENGINE": "django.db.backends.dummy"},
    "sqlite": {
        "ENGINE": "kindler.db.backends.sqlite3",
        "NAME": SQLITE_PATH,
        "OPTIONS": {
            # Several web workers and the reconciler share the file: WAL lets
            # readers run beside a writer, IMMEDIATE takes the write lock up
            # front so concurrent transactions wait instead of deadlocking.
            "timeout": SQLITE_BUSY_TIMEOUT,
            "transaction_mode": "IMMEDIATE",
            # FULL: during an outage (and in the embedded mode) this file holds
            # the only copy of acknowledged writes, so each commit is on disk
            # before the answer goes out. NORMAL could lose the last commits
            # of a power cut in WAL mode.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
        },
        # Opening the file and running the PRAGMAs costs ~4 ms a request
        # (bench/api.py); keeping connections makes SQLite answers ~1 ms.
        "CONN_MAX_AGE": env.int("SQLITE_CONN_MAX_AGE", default=600),
        "TEST": {"DEPENDENCIES": []},
    },
}

# What happens when no listed PostgreSQL accepts writes: `sqlite` serves from
# the local SQLite file and carries the changes back later; `off` refuses
# reads and writes with a 503 until PostgreSQL is back (PostgreSQL-only mode).
KINDLER_FALLBACK = env.str("KINDLER_FALLBACK", default="sqlite").strip().lower()
if KINDLER_FALLBACK not in ("sqlite", "off"):
    raise ImproperlyConfigured(f"KINDLER_FALLBACK must be sqlite or off, not {KINDLER_FALLBACK!r}")

# The bounded pool of PostgreSQL connections each process keeps (kindler/db/pool.py):
# at most PG_POOL_MAX open (0 turns the pool off: one persistent connection per
# thread, PG_CONN_MAX_AGE), PG_POOL_MIN kept open while idle, the rest closed after
# PG_POOL_MAX_IDLE seconds unused; a thread waits PG_POOL_TIMEOUT seconds for one
# before its request is answered 503.
PG_POOL_MIN = env.int("PG_POOL_MIN", default=2)
PG_POOL_MAX = env.int("PG_POOL_MAX", default=10)
PG_POOL_TIMEOUT = env.float("PG_POOL_TIMEOUT", default=30.0)
PG_POOL_MAX_IDLE = env.float("PG_POOL_MAX_IDLE", default=60.0)
if PG_POOL_MAX < 0 or not 0 <= PG_POOL_MIN <= (PG_POOL_MAX or PG_POOL_MIN):
    raise ImproperlyConfigured(
        f"PG_POOL_MIN ({PG_POOL_MIN}) must be between 0 and PG_POOL_MAX ({PG_POOL_MAX}), "
        "and PG_POOL_MAX 0 (no pool) or more"
    )
# For sizing only (dbstatus warns when the total exceeds max_connections): how
# many Kindler instances share this PostgreSQL, and each one's web server workers
# and threads (kindler.webserver reads the same two variables).
KINDLER_INSTANCES = env.int("KINDLER_INSTANCES", default=1)
KINDLER_WORKERS = env.int("KINDLER_WORKERS", default=2)
KINDLER_THREADS = env.int("KINDLER_THREADS", default=4)
# The WebSocket server `manage.py serve` starts (kindler.wsserver reads
# KINDLER_WS_BIND itself) is one more process of the instance, unless off.
KINDLER_WS_PROCESSES = int(
    env.str("KINDLER_WS_BIND", default="127.0.0.1:8001").strip().lower() not in ("", "off", "none")
)
# Seconds a client gets to send a request's whole body (kindler.asgi); then 408.
KINDLER_BODY_TIMEOUT = env.float("KINDLER_BODY_TIMEOUT", default=10.0)
if KINDLER_BODY_TIMEOUT <= 0:
    raise ImproperlyConfigured(
        f"KINDLER_BODY_TIMEOUT must be more than 0 seconds, not {KINDLER_BODY_TIMEOUT}"
    )
if PG_POOL_TIMEOUT <= 0:
    raise ImproperlyConfigured(
        f"PG_POOL_TIMEOUT must be more than 0 seconds, not {PG_POOL_TIMEOUT}"
    )

if env.str("PG_HOST", default=""):
    # A libpq host list (primary and standbys): Kindler writes to whichever
    # of them accepts writes now (kindler/db/failover/hosts.py).
    PG_HOSTS = parse_hosts(env.str("PG_HOST"), env.str("PG_PORT", default="5432"))
    DATABASES["postgres"] = {
        "ENGINE": "kindler.db.backends.postgresql",
        "HOST": ",".join(server.host for server in PG_HOSTS),
        "PORT": ",".join(str(server.port) for server in PG_HOSTS),
        "NAME": env.str("PG_DATABASE", default="kindler"),
        "USER": env.str("PG_USER", default="kindler"),
        "PASSWORD": read_secret("PG_PASSWORD"),
        # Pooled, Django gives each connection back at the end of every request
        # (CONN_MAX_AGE 0) and the pool checks it before reusing it.
        "CONN_MAX_AGE": env.int("PG_CONN_MAX_AGE", default=60) if PG_POOL_MAX == 0 else 0,
        # No SELECT 1 before each request's first query without the pool: the
        # monitor probes PostgreSQL off the request path, and the failover
        # middleware runs a request again on a fresh connection when a kept one
        # was dropped.
        "CONN_HEALTH_CHECKS": False,
        "POOL": {
            "MIN": PG_POOL_MIN,
            "MAX": PG_POOL_MAX,
            "TIMEOUT": PG_POOL_TIMEOUT,
            "MAX_IDLE": PG_POOL_MAX_IDLE,
        },
        # A server-side cursor lives across transactions, which PgBouncer's
        # transaction pooling cannot follow; Kindler's result sets are small.
        "DISABLE_SERVER_SIDE_CURSORS": True,
        "OPTIONS": {
            "connect_timeout": max(1, round(PG_CONNECT_TIMEOUT)),
            "sslmode": env.str("PG_SSLMODE", default="prefer"),
            "application_name": "kindler",
            # Skip a standby (or a read-only server) and take the next listed host.
            "target_session_attrs": "read-write",
            "options": (
                f"-c statement_timeout={int(PG_STATEMENT_TIMEOUT * 1000)} "
                f"-c lock_timeout={int(PG_LOCK_TIMEOUT * 1000)}"
            ),
        },
        "TEST": {"DEPENDENCIES": []},
    }

if KINDLER_FALLBACK == "off" and "postgres" not in DATABASES:
    raise ImproperlyConfigured("KINDLER_FALLBACK=off needs PostgreSQL: set PG_HOST as well")

DATABASE_ROUTERS = ["kindler.db.failover.routers.FailoverRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Sessions are files beside the SQLite file: a logout deletes the session (a
# signed cookie would stay valid until it expires), and no database holds
# them, so a login survives a database switch. Every process of an instance
# shares the folder; another instance keeps logins of its own.
SESSION_ENGINE = "django.contrib.sessions.backends.file"
SESSION_FILE_PATH = str(SQLITE_PATH.parent / f"{SQLITE_PATH.name}.sessions")
Path(SESSION_FILE_PATH).mkdir(mode=0o700, parents=True, exist_ok=True)
SESSION_COOKIE_HTTPONLY = True
# Failed sign-in and API token counts (clusters/ratelimit.py) are files beside
# the SQLite file too: every worker process of an instance counts against one
# limit. Only the throttle uses this cache; expired counts are removed when
# read, and MAX_ENTRIES is high so that many guesses cannot cull live counts.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(SQLITE_PATH.parent / f"{SQLITE_PATH.name}.cache"),
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
}
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
CSRF_FAILURE_VIEW = "clusters.errors.csrf_failure"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "handled_failover": {"()": "kindler.db.failover.middleware.HandledFailoverFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["handled_failover"],
        },
    },
    "loggers": {
        "kindler": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# Callables run, in order, when PostgreSQL answers again after an outage and
# before routing returns to it (state `recovering`); the journal replay plugs
# in here. One that raises keeps Kindler on SQLite until the next probe.
KINDLER_RECOVERY_HOOKS: list[str] = ["kindler.db.sync.recovery.recover"]

# While on PostgreSQL, copy it into the SQLite file at startup and every this
# many seconds (0 turns the mirror off), so a failover shows current data.
KINDLER_MIRROR_INTERVAL = env.float("KINDLER_MIRROR_INTERVAL", default=5.0)
# Days the SQLite file keeps the tombstone of a deleted row, so a restore or a
# failover that brings the row back to PostgreSQL does not undo the delete, and
# the versions it acknowledged, so such a merge tells a lost save (acknowledged.py).
KINDLER_TOMBSTONE_DAYS = env.float("KINDLER_TOMBSTONE_DAYS", default=30.0)

# Patroni's REST addresses (http://host:8008, comma-separated): health, dbstatus
# and the System page then name the member Kindler writes to (sync/patroni.py).
KINDLER_PATRONI_API = env.str("KINDLER_PATRONI_API", default="")

# Failed sign-ins allowed per account and address (and wrong API tokens per
# address) within the window (seconds) before answers are 429 with
# Retry-After; failed sign-ins per address, whatever the accounts; past the
# first limit, an account is slowed from everywhere, up to the longest delay
# (clusters/ratelimit.py). Counted for the instance as a whole (CACHES below:
# files shared by its processes).
# The most clusters (not marked for deletion) Kindler holds; 0 for no limit.
KINDLER_MAX_CLUSTERS = env.int("KINDLER_MAX_CLUSTERS", default=0)
if KINDLER_MAX_CLUSTERS < 0:
    raise ImproperlyConfigured(
        f"KINDLER_MAX_CLUSTERS must be 0 or more, not {KINDLER_MAX_CLUSTERS}"
    )
# The most clusters one signed-in person may ask for; 0 for no quota.
KINDLER_MAX_CLUSTERS_PER_USER = env.int("KINDLER_MAX_CLUSTERS_PER_USER", default=0)
if KINDLER_MAX_CLUSTERS_PER_USER < 0:
    raise ImproperlyConfigured(
        f"KINDLER_MAX_CLUSTERS_PER_USER must be 0 or more, not {KINDLER_MAX_CLUSTERS_PER_USER}"
    )
KINDLER_MAX_FAILED_ATTEMPTS = env.int("KINDLER_MAX_FAILED_ATTEMPTS", default=10)
KINDLER_MAX_FAILED_ADDRESS_ATTEMPTS = env.int("KINDLER_MAX_FAILED_ADDRESS_ATTEMPTS", default=100)
KINDLER_FAILED_ATTEMPTS_WINDOW = env.float("KINDLER_FAILED_ATTEMPTS_WINDOW", default=300.0)
KINDLER_FAILED_ATTEMPTS_MAX_DELAY = env.float("KINDLER_FAILED_ATTEMPTS_MAX_DELAY", default=60.0)

# Bearer token accepted by the JSON API besides a logged-in session; empty
# turns token access off.
KINDLER_API_TOKEN = read_secret("KINDLER_API_TOKEN")
# A short token can be guessed despite the throttle: refuse to start with one.
MIN_API_TOKEN_LENGTH = 32
if 0 < len(KINDLER_API_TOKEN) < MIN_API_TOKEN_LENGTH:
    raise ImproperlyConfigured(
        f"KINDLER_API_TOKEN has {len(KINDLER_API_TOKEN)} characters; it needs at least "
        f"{MIN_API_TOKEN_LENGTH}. Make one with: "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )
# The first admin account (manage.py ensure_admin). Read here as well, so a
# KINDLER_ADMIN_PASSWORD_FILE that cannot be read stops every start.
KINDLER_ADMIN_PASSWORD = read_secret("KINDLER_ADMIN_PASSWORD")

# Production hardening (docs/deployment.md). KINDLER_TLS=true says people
# reach Kindler over HTTPS, directly or through a TLS-terminating proxy.
KINDLER_TLS = env.bool("KINDLER_TLS", default=False)
if env.bool("KINDLER_BEHIND_PROXY", default=False):
    # Trust X-Forwarded-Proto only from a proxy that sets it and drops the client's.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = KINDLER_TLS
# Health probes (compose, load balancers) speak plain HTTP to the process.
SECURE_REDIRECT_EXEMPT = [r"^api/health$"]
SESSION_COOKIE_SECURE = KINDLER_TLS
CSRF_COOKIE_SECURE = KINDLER_TLS
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SECURE_HSTS_SECONDS = env.int("KINDLER_HSTS_SECONDS", default=31_536_000 if KINDLER_TLS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("KINDLER_HSTS_INCLUDE_SUBDOMAINS", default=KINDLER_TLS)
SECURE_HSTS_PRELOAD = env.bool("KINDLER_HSTS_PRELOAD", default=KINDLER_TLS)
# Everything Kindler serves comes from its own origin; no inline scripts or styles.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

# Queries slower than this are logged (SQL only, never the parameters).
KINDLER_SLOW_QUERY_MS = env.float("KINDLER_SLOW_QUERY_MS", default=200.0)
# Where the web server's workers keep their metrics so /api/metrics can add them up.
KINDLER_METRICS_DIR = Path(env.str("KINDLER_METRICS_DIR", default="") or f"{SQLITE_PATH}.metrics")

# Cluster lifecycle (manage.py reconcile), in seconds: the deadline of one
# k3d/kind command, the retry backoff after failures (doubling up to the max),
# how often a running command's output is saved, and how long an idle pass
# reuses the providers' last listing.
KINDLER_OPERATION_TIMEOUT = env.float("KINDLER_OPERATION_TIMEOUT", default=300.0)
KINDLER_RECONCILE_BACKOFF = env.float("KINDLER_RECONCILE_BACKOFF", default=10.0)
KINDLER_RECONCILE_BACKOFF_MAX = env.float("KINDLER_RECONCILE_BACKOFF_MAX", default=600.0)
KINDLER_LOG_FLUSH_INTERVAL = env.float("KINDLER_LOG_FLUSH_INTERVAL", default=1.0)
KINDLER_OBSERVE_INTERVAL = env.float("KINDLER_OBSERVE_INTERVAL", default=10.0)
# Executables run after each successful create, delete, start and stop
# (docs/hooks.md); empty runs none. Each hook gets KINDLER_HOOK_TIMEOUT seconds.
KINDLER_HOOKS_DIR = env.str("KINDLER_HOOKS_DIR", default="")
KINDLER_HOOK_TIMEOUT = env.float("KINDLER_HOOK_TIMEOUT", default=60.0)
# Further environment variables k3d, kind and the hooks get (names or shell
# patterns, comma-separated), beyond PATH, HOME, the locale and Docker's,
# kubectl's and the providers' own (clusters/drivers/environment.py).
KINDLER_CHILD_ENV = env.list("KINDLER_CHILD_ENV", default=[])

# Placement (docs/placement.md): the Docker host this process's reconciler
# acts for, the host a cluster gets when a request names none and several
# have a live reconciler, and how often a reconciler says it is alive (one
# silent for three intervals is no longer live).
KINDLER_HOST_NAME = env.str("KINDLER_HOST_NAME", default="") or socket.gethostname()
KINDLER_DEFAULT_HOST = env.str("KINDLER_DEFAULT_HOST", default="")
KINDLER_HEARTBEAT_INTERVAL = env.float("KINDLER_HEARTBEAT_INTERVAL", default=5.0)

# The original Kindler web UI (axios) reads the CSRF token from an XSRF-TOKEN
# cookie and sends it back in an X-XSRF-TOKEN header. Kindler sets that cookie
# beside csrftoken, with the same secret, and accepts either header; the
# Origin and Referer checks are the same for both (clusters.middleware).
KINDLER_XSRF_COOKIE_NAME = "XSRF-TOKEN"
KINDLER_XSRF_HEADER_NAME = "HTTP_X_XSRF_TOKEN"
# The domain the original web UI builds cluster links under
# (http://whoami.NAME.<domain>/); served as base_domain by /api/config.
KINDLER_BASE_DOMAIN = env.str("KINDLER_BASE_DOMAIN", default="localhost")
# How often a /ws/tasks connection reads the tasks it follows (clusters/websocket.py).
KINDLER_WS_POLL_INTERVAL = env.float("KINDLER_WS_POLL_INTERVAL", default=1.0)
if KINDLER_WS_POLL_INTERVAL <= 0:
    raise ImproperlyConfigured(
        f"KINDLER_WS_POLL_INTERVAL must be more than 0 seconds, not {KINDLER_WS_POLL_INTERVAL}"
    )
