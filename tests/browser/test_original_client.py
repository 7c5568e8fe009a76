"""A single-page client, built the way the original Kindler web UI is, against a live Kindler.

The client (tests/browser/spa/) reads the CSRF token from the XSRF-TOKEN
cookie, sends it as X-XSRF-TOKEN, and follows each task by polling
/api/tasks/ID; the reconciler runs in the test between the clicks.
"""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from clusters.models import Cluster
from clusters.reconciler import Reconciler
from tests.conftest import BOTH
from tests.factories import make_cluster, make_superuser
from tests.fakes import FakeTools

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(databases=BOTH, transaction=True),
    pytest.mark.urls("tests.browser.spa_urls"),
]


@pytest.fixture(autouse=True)
def _quick(settings: Any) -> None:
    settings.KINDLER_LOG_FLUSH_INTERVAL = 0.1


def wait(browser: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(browser, 10)


def log_in(browser: WebDriver, base_url: str) -> None:
    browser.get(f"{base_url}/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("password")
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait(browser).until(expected_conditions.url_to_be(f"{base_url}/"))


def latest_task(browser: WebDriver, status: str) -> WebElement:
    """Wait until the newest task card shows status; return it."""

    def shows(driver: WebDriver) -> WebElement | None:
        cards = driver.find_elements(By.CSS_SELECTOR, "#tasks li")
        if cards and cards[-1].get_attribute("data-status") == status:
            return cards[-1]
        return None

    found = wait(browser).until(shows)
    assert found is not None
    return found


def cluster_status(browser: WebDriver, name: str, status: str) -> None:
    wait(browser).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, f"#cluster-{name} .status"), status
        )
    )


def click(browser: WebDriver, name: str, action: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f"#cluster-{name} button.{action}").click()


def test_signed_out_the_client_is_told_where_to_sign_in(
    browser: WebDriver, live_server: Any
) -> None:
    browser.get(f"{live_server.url}/spa/")
    link = wait(browser).until(
        expected_conditions.visibility_of_element_located((By.ID, "signin-link"))
    )
    assert link.get_attribute("href") == f"{live_server.url}/accounts/login/"
    assert browser.find_element(By.ID, "error").text == (
        "401 Authentication required: log in, or send Authorization: Bearer"
    )


def test_the_client_creates_stops_starts_and_deletes_a_cluster(
    browser: WebDriver, live_server: Any, fakes: FakeTools
) -> None:
    make_superuser()
    make_cluster(name="devops", http_port=18080, https_port=18443, pf_port=19000)
    log_in(browser, live_server.url)
    browser.get(f"{live_server.url}/spa/")
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "cluster-devops")))
    assert browser.find_element(By.ID, "base-domain").text == "localhost"

    browser.find_element(By.ID, "name").send_keys("web-dev")
    browser.find_element(By.ID, "create-button").click()
    card = latest_task(browser, "pending")
    wait(browser).until(lambda driver: card.text == "Creating cluster web-dev: pending 0%")
    assert Cluster.objects.get(name="web-dev").http_port == 18081

    Reconciler().run_once()
    card = latest_task(browser, "completed")
    assert card.text == "Cluster web-dev created: completed 100%"
    cluster_status(browser, "web-dev", "running")

    for action, state in (("stop", "stopped"), ("start", "running")):
        click(browser, "web-dev", action)
        latest_task(browser, "pending")
        Reconciler().run_once()
        assert latest_task(browser, "completed").get_attribute("data-progress") == "100"
        cluster_status(browser, "web-dev", state)

    click(browser, "web-dev", "delete")
    latest_task(browser, "pending")
    Reconciler().run_once()
    assert latest_task(browser, "completed").text == "Cluster web-dev deleted: completed 100%"
    wait(browser).until(
        expected_conditions.invisibility_of_element_located((By.ID, "cluster-web-dev"))
    )
    assert browser.find_element(By.ID, "error").text == ""
