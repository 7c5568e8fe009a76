"""A person's first minutes with the dashboard, in a real browser."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connections
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from clusters.models import OperationLog
from kindler.db.failover.monitor import State
from kindler.db.failover.pinning import pinned_alias
from tests.conftest import BOTH, wait_for_state
from tests.factories import make_cluster, make_operation, make_superuser
from tests.pgserver import PostgresServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(databases=BOTH, transaction=True)]


def log_in(browser: WebDriver, base_url: str) -> None:
    browser.get(f"{base_url}/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("password")
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(f"{base_url}/"))


def add_cluster(browser: WebDriver, base_url: str, name: str) -> None:
    browser.get(f"{base_url}/new/")
    fields = {"name": name, "http_port": "28080", "https_port": "28443", "pf_port": "29000"}
    for field, value in fields.items():
        element = browser.find_element(By.NAME, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(f"{base_url}/clusters/{name}/"))


def test_log_in_add_a_cluster_and_see_the_fallback_banner(
    browser: WebDriver, live_server: Any, pg: PostgresServer
) -> None:
    admin = make_superuser()
    # Accounts are mirrored to SQLite with the same id, so the session survives.
    with pinned_alias("sqlite"):
        make_superuser(id=admin.pk)
    base_url = live_server.url
    log_in(browser, base_url)
    add_cluster(browser, base_url, "browser-dev")

    browser.get(f"{base_url}/")
    names = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.clusters td a")]
    assert names == ["browser-dev"]
    assert browser.find_elements(By.ID, "database-banner") == []

    # This thread's connection would die with the server; the flush after
    # the test must open a fresh one once the server is back.
    connections["postgres"].close()
    pg.stop()
    wait_for_state(State.FALLBACK)
    browser.get(f"{base_url}/")
    banner = browser.find_element(By.ID, "database-banner").text
    assert banner.startswith("PostgreSQL unreachable since ")
    assert banner.endswith("— changes are kept locally and will be synced when it returns.")


def test_a_running_operation_updates_without_a_reload(browser: WebDriver, live_server: Any) -> None:
    make_superuser()
    cluster = make_cluster(name="live")
    operation = make_operation(cluster, status="running", log_output="creating node 1\n")
    log_in(browser, live_server.url)
    browser.get(f"{live_server.url}/clusters/live/")
    # A reload would drop this mark; the polling script must keep the page.
    browser.execute_script("document.body.dataset.marker = 'same page'")
    OperationLog.objects.filter(pk=operation.pk).update(
        status="success", log_output="creating node 1\ncluster live ready\n"
    )
    WebDriverWait(browser, 10).until(
        expected_conditions.text_to_be_present_in_element(
            (By.ID, f"operation-{operation.uid}"), "cluster live ready"
        )
    )
    assert browser.execute_script("return document.body.dataset.marker") == "same page"
