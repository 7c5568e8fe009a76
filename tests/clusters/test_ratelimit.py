"""Failed sign-ins and API token guesses are limited per address and per account."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client, RequestFactory

from clusters import ratelimit
from tests.conftest import BOTH, forget_failures
from tests.factories import make_superuser

pytestmark = pytest.mark.django_db(databases=BOTH)
TOKEN = "a-token-of-thirty-two-characters"


@pytest.fixture(autouse=True)
def _fresh_counts(settings: Any) -> Iterator[None]:
    settings.KINDLER_API_TOKEN = TOKEN
    settings.KINDLER_MAX_FAILED_ATTEMPTS = 10
    settings.KINDLER_FAILED_ATTEMPTS_WINDOW = 300
    forget_failures()
    yield
    forget_failures()


def sign_in(client: Client, password: str, username: str = "admin") -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_the_right_password_after_40_wrong_ones_is_refused_with_429(
    alias: str, client: Client
) -> None:
    make_superuser()
    for _ in range(40):
        sign_in(client, "wrong")
    response = sign_in(client, "password")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 300
    assert "Too many failed attempts; try again in" in response.text
    assert "_auth_user_id" not in client.session


def test_the_right_password_works_again_once_the_window_has_passed(
    alias: str, client: Client, settings: Any
) -> None:
    make_superuser()
    # Long enough for ten sign-ins on a busy machine; the window starts at the first.
    settings.KINDLER_FAILED_ATTEMPTS_WINDOW = 2.0
    first = time.monotonic()
    for _ in range(10):
        sign_in(client, "wrong")
    assert sign_in(client, "password").status_code == 429
    time.sleep(max(0.0, first + 2.1 - time.monotonic()))
    assert sign_in(client, "password").status_code == 302


def test_a_few_wrong_passwords_do_not_lock_anyone_out(alias: str, client: Client) -> None:
    make_superuser()
    for _ in range(9):
        sign_in(client, "wrong")
    assert sign_in(client, "password").status_code == 302


def test_an_account_is_limited_whatever_address_tries_it(alias: str, client: Client) -> None:
    make_superuser()
    for number in range(10):
        Client(REMOTE_ADDR=f"10.0.0.{number}").post(
            "/accounts/login/", {"username": "admin", "password": "wrong"}
        )
    assert sign_in(client, "password").status_code == 429


def test_token_guesses_are_limited_with_429_json(alias: str, client: Client) -> None:
    for _ in range(10):
        client.get("/api/clusters", headers={"Authorization": "Bearer " + "x" * 32})
    response = client.get("/api/clusters", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Too many failed attempts; try again in ")
    assert 0 < int(response["Retry-After"]) <= 300


class CountingCache:
    """The cache, counting the failure counts read through it."""

    def __init__(self) -> None:
        self.reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return cache.get(key, default)

    def set(self, *args: Any, **kwargs: Any) -> None:
        cache.set(*args, **kwargs)


def test_the_counts_are_read_only_after_a_failure_within_the_window(
    alias: str, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingCache()
    monkeypatch.setattr(ratelimit, "cache", counting)
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/clusters", headers=right).status_code == 200
    assert counting.reads == 0
    wrong = client.get("/api/clusters", headers={"Authorization": "Bearer " + "x" * 32})
    assert wrong.status_code == 401
    reads_to_count_it = counting.reads
    assert client.get("/api/clusters", headers=right).status_code == 200
    assert counting.reads == reads_to_count_it + 1
    # A failure older than the window is as good as none.
    marker = ratelimit.marker_path()
    assert marker is not None
    old = time.time() - 301
    os.utime(marker, (old, old))
    assert client.get("/api/clusters", headers=right).status_code == 200
    assert counting.reads == reads_to_count_it + 1


@pytest.mark.parametrize("token", ["short", TOKEN + "x", TOKEN[:-1]])
def test_a_token_of_another_length_is_refused(alias: str, client: Client, token: str) -> None:
    response = client.get("/api/clusters", headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API token"})


def test_signed_in_pages_are_not_stored_by_caches(alias: str, client: Client) -> None:
    client.force_login(make_superuser())
    response = client.get("/")
    assert response["Cache-Control"] == "no-store, private"


@pytest.mark.parametrize("path", ["/accounts/password_reset/", "/accounts/reset/MQ/set-password/"])
def test_password_reset_pages_are_not_served_without_mail(
    alias: str, client: Client, path: str
) -> None:
    assert client.get(path).status_code == 404


# A worker process of the same instance: same settings, same SQLite file.
RECORD_FAILURES = """
import sys
import django
django.setup()
from django.test import RequestFactory
from clusters import ratelimit
request = RequestFactory().get("/", REMOTE_ADDR=sys.argv[1])
for _ in range(int(sys.argv[2])):
    ratelimit.record_failure(request, "admin")
"""


def fail_in_processes(address: str, processes: int, failures: int) -> None:
    """Record failures from address in separate processes, all at once."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    running = [
        subprocess.Popen(
            [sys.executable, "-c", RECORD_FAILURES, address, str(failures)],
            env=env,
            cwd=Path(django_settings.BASE_DIR),
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    for process in running:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()


@pytest.mark.slow
def test_failures_in_another_worker_process_count_here(alias: str, client: Client) -> None:
    make_superuser()
    fail_in_processes("203.0.113.9", processes=1, failures=10)
    response = Client(REMOTE_ADDR="203.0.113.9").post(
        "/accounts/login/", {"username": "someone", "password": "password"}
    )
    assert response.status_code == 429
    assert sign_in(client, "password").status_code == 429


@pytest.mark.slow
def test_failures_in_several_processes_at_once_are_all_counted(alias: str) -> None:
    fail_in_processes("203.0.113.10", processes=4, failures=25)
    count, _ = cache.get("kindler:failures:address:203.0.113.10")
    assert count == 100


def test_the_counts_are_files_private_to_the_instance() -> None:
    folder = Path(str(django_settings.CACHES["default"]["LOCATION"]))
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.11")
    ratelimit.record_failure(request)
    assert folder.parent == Path(django_settings.DATABASES["sqlite"]["NAME"]).parent
    assert (
        stat.S_IMODE(folder.stat().st_mode),
        cache.get("kindler:failures:address:203.0.113.11")[0],
    ) == (0o700, 1)


@pytest.mark.parametrize(("token", "refused"), [("x" * 31, True), ("x" * 32, False), ("", False)])
def test_kindler_refuses_to_start_with_an_api_token_under_32_characters(
    token: str, refused: bool, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kindler.settings",
        "KINDLER_API_TOKEN": token,
        "SQLITE_PATH": str(tmp_path / "kindler.db"),
    }
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        cwd=Path(django_settings.BASE_DIR),
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    if refused:
        assert (done.returncode, last) == (
            1,
            "django.core.exceptions.ImproperlyConfigured: KINDLER_API_TOKEN has 31 characters; "
            "it needs at least 32. Make one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    else:
        assert (done.returncode, last) == (0, "")
