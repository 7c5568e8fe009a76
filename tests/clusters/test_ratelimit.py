"""Failed sign-ins are limited per account and address, per address and (slowing) per account."""

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
# "victim" in full-width letters: NFKC makes it "victim".
FULL_WIDTH_VICTIM = "\uff56\uff49\uff43\uff54\uff49\uff4d"


@pytest.fixture(autouse=True)
def _fresh_counts(settings: Any) -> Iterator[None]:
    settings.KINDLER_API_TOKEN = TOKEN
    settings.KINDLER_MAX_FAILED_ATTEMPTS = 10
    settings.KINDLER_MAX_FAILED_ADDRESS_ATTEMPTS = 100
    settings.KINDLER_FAILED_ATTEMPTS_WINDOW = 300
    settings.KINDLER_FAILED_ATTEMPTS_MAX_DELAY = 60
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


def fail_from_addresses(count: int, username: str = "admin") -> None:
    for number in range(count):
        Client(REMOTE_ADDR=f"10.0.0.{number}").post(
            "/accounts/login/", {"username": username, "password": "wrong"}
        )


def test_an_account_failed_from_everywhere_is_slowed_by_a_doubling_delay(
    alias: str, client: Client
) -> None:
    make_superuser()
    # Ten failures reach the limit; each of the five after it doubles the delay: 2**5 s.
    fail_from_addresses(15)
    response = sign_in(client, "password")
    assert (response.status_code, 0 < int(response["Retry-After"]) <= 32) == (429, True)


def test_an_account_failed_from_everywhere_is_never_locked(
    alias: str, client: Client, settings: Any
) -> None:
    make_superuser()
    settings.KINDLER_FAILED_ATTEMPTS_MAX_DELAY = 0.5
    fail_from_addresses(40)
    time.sleep(0.6)
    assert sign_in(client, "password").status_code == 302


def test_an_address_that_failed_for_many_accounts_is_refused(
    alias: str, client: Client, settings: Any
) -> None:
    make_superuser()
    settings.KINDLER_MAX_FAILED_ADDRESS_ATTEMPTS = 20
    for number in range(20):
        sign_in(client, "wrong", username=f"someone-{number}")
    refused = sign_in(client, "password")
    other = Client(REMOTE_ADDR="10.9.9.9").post(
        "/accounts/login/", {"username": "admin", "password": "password"}
    )
    assert (refused.status_code, other.status_code) == (429, 302)


@pytest.mark.parametrize(
    ("guessed", "signing_in"), [(FULL_WIDTH_VICTIM, "victim"), ("victim", f" {FULL_WIDTH_VICTIM} ")]
)
def test_the_limit_counts_the_name_as_authentication_sees_it(
    alias: str, client: Client, guessed: str, signing_in: str
) -> None:
    make_superuser(username="victim")
    for _ in range(10):
        sign_in(client, "wrong", username=guessed)
    assert sign_in(client, "password", username=signing_in).status_code == 429


def test_a_browser_that_signed_in_before_is_not_kept_out_by_others(
    alias: str, client: Client
) -> None:
    make_superuser()
    assert sign_in(client, "password").status_code == 302
    client.post("/accounts/logout/")
    # The same address (a proxy's) and every other one fail for the account.
    attacker = Client()
    for _ in range(40):
        attacker.post("/accounts/login/", {"username": "admin", "password": "wrong"})
    fail_from_addresses(20)
    refused = sign_in(attacker, "password").status_code
    owner = sign_in(client, "password").status_code
    assert (refused, owner) == (429, 302)


def test_a_device_cookie_is_for_its_account_only(alias: str, client: Client) -> None:
    make_superuser()
    make_superuser(username="other")
    assert sign_in(client, "password", username="other").status_code == 302
    client.post("/accounts/logout/")
    fail_from_addresses(15)
    assert sign_in(client, "password").status_code == 429


def test_a_forged_device_cookie_counts_for_nothing(alias: str, client: Client) -> None:
    make_superuser()
    fail_from_addresses(15)
    client.cookies[ratelimit.DEVICE_COOKIE] = "forged:value"
    assert sign_in(client, "password").status_code == 429


def test_the_device_cookie_is_private_to_the_browser(alias: str, client: Client) -> None:
    make_superuser()
    sign_in(client, "password")
    cookie = client.cookies[ratelimit.DEVICE_COOKIE]
    assert (cookie["httponly"], cookie["samesite"], cookie["max-age"]) == (
        True,
        "Lax",
        ratelimit.DEVICE_MAX_AGE,
    )


def test_token_guesses_are_limited_with_429_json(alias: str, client: Client) -> None:
    for _ in range(10):
        client.get("/api/clusters", headers={"Authorization": "Bearer " + "x" * 32})
    response = client.get("/api/clusters", headers={"Authorization": "Bearer " + "x" * 32})
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Too many failed attempts; try again in ")
    assert 0 < int(response["Retry-After"]) <= 300


def test_a_valid_token_is_never_refused_for_failures(alias: str, client: Client) -> None:
    make_superuser()
    for _ in range(11):
        sign_in(client, "wrong")
        client.get("/api/clusters", headers={"Authorization": "Bearer " + "x" * 32})
    response = client.get("/api/clusters", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200


def test_wrong_old_passwords_on_the_password_change_form_are_limited(
    alias: str, client: Client
) -> None:
    client.force_login(make_superuser())
    answers = [
        client.post(
            "/accounts/password_change/",
            {
                "old_password": "wrong",
                "new_password1": "n3w-Passw0rd!",
                "new_password2": "n3w-Passw0rd!",
            },
        ).status_code
        for _ in range(11)
    ]
    right = client.post(
        "/accounts/password_change/",
        {
            "old_password": "password",
            "new_password1": "n3w-Passw0rd!",
            "new_password2": "n3w-Passw0rd!",
        },
    )
    assert (answers, right.status_code) == ([200] * 10 + [429], 429)


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
    wrong = {"Authorization": "Bearer " + "x" * 32}
    reads = []
    for headers in (right, wrong, right, wrong):
        client.get("/api/clusters", headers=headers)
        reads.append(counting.reads)
    # A valid token reads nothing; the first wrong one only its count to add
    # to it, the second one its count to check first.
    assert reads == [0, 1, 1, 3]
    # A failure older than the window is as good as none.
    marker = ratelimit.marker_path()
    assert marker is not None
    old = time.time() - 301
    os.utime(marker, (old, old))
    client.get("/api/clusters", headers=wrong)
    assert counting.reads == 4


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
        "/accounts/login/", {"username": "admin", "password": "password"}
    )
    assert response.status_code == 429


@pytest.mark.slow
def test_failures_in_several_processes_at_once_are_all_counted(alias: str) -> None:
    fail_in_processes("203.0.113.10", processes=4, failures=25)
    count, _, _ = cache.get(ratelimit.count_key("address", "203.0.113.10"))
    assert count == 100


def test_the_counts_are_files_private_to_the_instance() -> None:
    folder = Path(str(django_settings.CACHES["default"]["LOCATION"]))
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.11")
    ratelimit.record_failure(request)
    assert folder.parent == Path(django_settings.DATABASES["sqlite"]["NAME"]).parent
    assert (
        stat.S_IMODE(folder.stat().st_mode),
        cache.get(ratelimit.count_key("address", "203.0.113.11"))[0],
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
