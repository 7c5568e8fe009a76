"""The original Kindler web UI, built with npm and served by nginx as docs/api.md says, in Chromium.

Kindler runs as `manage.py serve` runs it (the API, the WebSocket server and
the reconciler, with the fake k3d); nginx serves the built app and forwards
Kindler's paths with the documented server block. The test signs in through
the redirect, then creates, stops, starts and deletes a cluster with the
app's own buttons, each task card following its task over /ws/tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests import served as running
from tests.browser.webui import built_webui
from tests.conftest import BOTH
from tests.nginx import NGINX, Nginx
from tests.served import PASSWORD, SERVER_HASHER, Served

serve = running.serve
NAME = "webui-demo"
# The app's create button: an emoji icon, then its label.
CREATE = "\N{HEAVY PLUS SIGN} 创建集群"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(databases=BOTH, transaction=True),
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx)"),
]


def wait(browser: WebDriver, seconds: float = 30) -> WebDriverWait[WebDriver]:
    return WebDriverWait(browser, seconds, poll_frequency=0.05)


def button(scope: WebDriver | WebElement, text: str) -> WebElement:
    return scope.find_element(By.XPATH, f".//button[normalize-space()='{text}']")


def row(browser: WebDriver) -> WebElement:
    return browser.find_element(By.XPATH, f"//tr[.//a[normalize-space()='{NAME}']]")


def task_cards(browser: WebDriver) -> list[WebElement]:
    return browser.find_elements(By.CSS_SELECTOR, ".n-card")


def card_state(card: WebElement) -> tuple[str, str, int]:
    """Return a task card's title, status tag and progress."""
    title = card.find_element(By.CSS_SELECTOR, ".n-card-header__main").text
    tag = card.find_element(By.CSS_SELECTOR, ".n-tag").text
    bar = card.find_element(By.CSS_SELECTOR, "[role=progressbar]")
    return title, tag, int(bar.get_attribute("aria-valuenow") or -1)


def follow_task(browser: WebDriver) -> list[tuple[str, str, int]]:
    """Watch the task card from its first state until it is gone; return what it showed."""
    wait(browser).until(lambda driver: task_cards(driver))
    shown: list[tuple[str, str, int]] = []

    def gone(driver: WebDriver) -> bool:
        cards = task_cards(driver)
        if not cards:
            return True
        try:
            state = card_state(cards[0])
        except StaleElementReferenceException:
            return False
        if not shown or shown[-1] != state:
            shown.append(state)
        return False

    # The card goes 5 s after its task ends.
    wait(browser, 60).until(gone)
    return shown


def status_of(browser: WebDriver) -> str:
    return row(browser).find_element(By.CSS_SELECTOR, ".n-tag").text


def shows_status(word: str) -> Callable[[WebDriver], bool]:
    return lambda driver: status_of(driver) == word


def test_the_original_web_ui_signs_in_creates_stops_starts_and_deletes(
    serve: Callable[..., Served], browser: WebDriver, tmp_path: Path, settings: Any
) -> None:
    dist = built_webui()
    settings.PASSWORD_HASHERS = [SERVER_HASHER]
    User.objects.create_superuser("ada", password=PASSWORD)
    # The fake k3d spreads its output over 2 s, so the card shows the phases.
    served = serve(KINDLER_FAKE_SLEEP="2")
    nginx = Nginx(tmp_path / "nginx", dist, served.http_port, served.ws_port)
    nginx.start()
    try:
        browser.get(f"{nginx.url}/")
        assert browser.current_url == f"{nginx.url}/accounts/login/?next=/"
        browser.find_element(By.NAME, "username").send_keys("ada")
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
        wait(browser).until(lambda driver: driver.current_url == f"{nginx.url}/")

        wait(browser).until(lambda driver: button(driver, CREATE))
        button(browser, CREATE).click()
        modal = wait(browser).until(lambda driver: driver.find_element(By.CSS_SELECTOR, ".n-modal"))
        modal.find_element(By.CSS_SELECTOR, "input[placeholder^='例如: dev']").send_keys(NAME)
        button(modal, "创建").click()
        created = follow_task(browser)
        assert created[-1] == (f"Cluster {NAME} created", "已完成", 100), created
        # The card moved on its own, through the phases k3d printed.
        progress = [percent for _, _, percent in created]
        assert progress == sorted(progress), created
        assert len(set(progress)) >= 3, created
        wait(browser).until(shows_status("运行中"))

        for action, verb, after in (("停止", "stopped", "已停止"), ("启动", "started", "运行中")):
            button(row(browser), action).click()
            shown = follow_task(browser)
            assert shown[-1] == (f"Cluster {NAME} {verb}", "已完成", 100), shown
            wait(browser).until(shows_status(after))

        button(row(browser), "删除").click()
        confirm = wait(browser).until(
            lambda driver: driver.find_element(By.CSS_SELECTOR, ".n-popconfirm")
        )
        confirm.find_elements(By.CSS_SELECTOR, ".n-popconfirm__action button")[-1].click()
        deleted = follow_task(browser)
        assert deleted[-1] == (f"Cluster {NAME} deleted", "已完成", 100), deleted
        wait(browser).until(
            lambda driver: not driver.find_elements(By.XPATH, f"//a[normalize-space()='{NAME}']")
        )
    finally:
        nginx.stop()
