"""Pages that stay current while operations run, hooks' results on the page, in a real browser."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from clusters.models import Cluster, OperationLog
from clusters.reconciler import Reconciler
from tests.browser.test_dashboard import add_cluster, log_in
from tests.conftest import BOTH
from tests.factories import make_cluster, make_registration, make_superuser
from tests.fakes import FakeTools

pytestmark = [pytest.mark.browser, pytest.mark.django_db(databases=BOTH, transaction=True)]


def field(browser: WebDriver, label: str) -> str:
    """Return the text of the cluster page's field named label."""
    return str(
        browser.execute_script(
            "for (const dt of document.querySelectorAll('dl.fields dt')) {"
            "  if (dt.textContent === arguments[0]) {"
            "    return dt.nextElementSibling.textContent.trim().replace(/\\s+/g, ' ');"
            "  }"
            "}"
            "return null;",
            label,
        )
    )


def wait_until(browser: WebDriver, check: Callable[[], object], seconds: float = 15) -> None:
    # A row found just before the page replaces it is stale: look again.
    WebDriverWait(
        browser, seconds, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    ).until(lambda _driver: check())


def mark_page(browser: WebDriver) -> None:
    # A reload would drop this mark: the page must change in place.
    browser.execute_script("document.body.dataset.marker = 'same page'")


def same_page(browser: WebDriver) -> bool:
    return browser.execute_script("return document.body.dataset.marker") == "same page"


def test_the_cluster_page_follows_a_create_and_a_stop_without_a_reload(
    browser: WebDriver, live_server: Any, fakes: FakeTools
) -> None:
    make_superuser()
    make_registration()  # a live reconciler for this host: the create will happen
    log_in(browser, live_server.url)
    add_cluster(browser, live_server.url, "live")
    assert browser.find_element(By.CSS_SELECTOR, ".messages").text == (
        "Cluster live added; it will be created shortly."
    )
    assert browser.find_element(By.ID, "cluster-state").text == "unknown"
    assert field(browser, "Last reconciled") == "never"
    mark_page(browser)

    Reconciler().run_once()
    wait_until(browser, lambda: browser.find_element(By.ID, "cluster-state").text == "running")
    assert field(browser, "Actual state") == "running"
    cluster = Cluster.objects.get(name="live")
    assert cluster.last_reconciled_at is not None
    reconciled = timezone.localtime(cluster.last_reconciled_at).strftime("%Y-%m-%d %H:%M:%S")
    assert field(browser, "Last reconciled") == reconciled
    wait_until(browser, lambda: not browser.find_elements(By.CSS_SELECTOR, ".messages li"))
    assert browser.find_element(By.CSS_SELECTOR, "#operations details .status").text == "success"
    assert browser.find_elements(By.CSS_SELECTOR, "figure.timeline svg.chart") != []
    assert same_page(browser)

    browser.find_element(By.XPATH, "//button[text()='Stop']").click()
    wait_until(browser, lambda: browser.find_elements(By.XPATH, "//button[text()='Start']"))
    message = browser.find_element(By.CSS_SELECTOR, ".messages").text
    assert message == "Cluster live will be stopped."
    assert browser.find_element(By.ID, "cluster-state").text == "running"
    mark_page(browser)

    Reconciler().run_once()
    wait_until(browser, lambda: browser.find_element(By.ID, "cluster-state").text == "stopped")
    assert field(browser, "Desired state") == "stopped"
    assert field(browser, "Actual state") == "stopped"
    wait_until(browser, lambda: not browser.find_elements(By.CSS_SELECTOR, ".messages li"))
    summaries = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#operations summary")]
    assert [text.split()[:2] for text in summaries] == [["stop", "success"], ["create", "success"]]
    assert same_page(browser)


def test_the_list_replaces_only_the_rows_that_changed(browser: WebDriver, live_server: Any) -> None:
    make_superuser()
    make_cluster(name="alpha", actual_state="creating")
    beta = make_cluster(name="beta", actual_state="running")
    log_in(browser, live_server.url)
    mark_page(browser)
    browser.execute_script(
        "document.querySelector('tr[data-name=beta]').dataset.kept = 'yes';"
        "document.querySelector('tr[data-name=alpha]').dataset.kept = 'yes';"
    )
    moment = timezone.now() - timedelta(minutes=3)
    Cluster.objects.filter(name="alpha").update(actual_state="running", last_reconciled_at=moment)

    def alpha_state() -> str:
        return str(browser.find_element(By.CSS_SELECTOR, "tr[data-name=alpha] .state").text)

    wait_until(browser, lambda: alpha_state() == "running")
    cells = browser.find_elements(By.CSS_SELECTOR, "tr[data-name=alpha] td")
    assert cells[-1].text == timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")
    kept = browser.execute_script(
        "return [...document.querySelectorAll('tbody tr')].map(r => r.dataset.kept || 'new')"
    )
    assert kept == ["new", "yes"]
    assert browser.find_element(By.CSS_SELECTOR, ".summary").text == "2 clusters · 2 running"
    assert same_page(browser)
    assert beta.name == "beta"


def test_polling_pauses_while_the_tab_is_hidden(browser: WebDriver, live_server: Any) -> None:
    make_superuser()
    make_cluster(name="alpha", actual_state="creating")
    log_in(browser, live_server.url)
    browser.execute_script(
        "window.polls = 0;"
        "const fetchBefore = window.fetch;"
        "window.fetch = function () {"
        "  window.polls += 1; return fetchBefore.apply(this, arguments);"
        "};"
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
        "document.dispatchEvent(new Event('visibilitychange'));"
        "window.pollsWhenHidden = window.polls;"
    )
    Cluster.objects.filter(name="alpha").update(actual_state="running")
    browser.execute_script("return new Promise(done => setTimeout(done, 5000))")
    assert browser.execute_script("return window.polls - window.pollsWhenHidden") <= 1
    assert browser.find_element(By.CSS_SELECTOR, "tr[data-name=alpha] .state").text == "creating"

    browser.execute_script(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
        "document.dispatchEvent(new Event('visibilitychange'));"
    )
    wait_until(
        browser,
        lambda: (
            browser.find_element(By.CSS_SELECTOR, "tr[data-name=alpha] .state").text == "running"
        ),
    )


def test_the_page_shows_flags_as_requested_and_what_the_hooks_said(
    browser: WebDriver, live_server: Any, fakes: FakeTools, settings: Any, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for name, body in (
        ("10-portainer", "echo 'kindler: registered portainer endpoint 7'"),
        ("20-argocd", "echo 'argocd: connection refused'; exit 2"),
    ):
        (hooks / name).write_text(f"#!/bin/sh\n{body}\n")
        (hooks / name).chmod(0o755)
    settings.KINDLER_HOOKS_DIR = str(hooks)
    make_superuser()
    log_in(browser, live_server.url)
    add_cluster(browser, live_server.url, "hooked")
    assert field(browser, "Portainer") == "requested · no hook has reported it"
    assert field(browser, "Argo CD") == "requested · no hook has reported it"
    assert field(browser, "Hooks") == "none has run yet"
    Cluster.objects.filter(name="hooked").update(haproxy_route=False)

    Reconciler().run_once()
    wait_until(browser, lambda: field(browser, "Hooks").startswith("after create "))
    log = OperationLog.objects.get(cluster_name="hooked")
    when = timezone.localtime(log.created_at).strftime("%Y-%m-%d %H:%M:%S")
    assert field(browser, "Portainer") == (
        f"requested · registered by hook 10-portainer after create {when}: endpoint 7"
    )
    assert field(browser, "HAProxy route") == "not requested"
    assert field(browser, "Argo CD") == "requested · no hook has reported it"
    hooks_ran = f"after create {when}: 10-portainer ok 20-argocd failed (exit 2)"
    assert field(browser, "Hooks") == hooks_ran
    warning = browser.find_element(By.CSS_SELECTOR, f"#operation-{log.uid} .notice-warning")
    assert warning.text == "Hook 20-argocd did not succeed; the operation itself did."


def test_the_admin_cluster_list_fits_1400_pixels(browser: WebDriver, live_server: Any) -> None:
    make_superuser()
    for index in range(3):
        make_cluster(name=f"team-environment-{index}", subnet=f"172.28.{index}.0/24")
    make_cluster(
        name="a-rather-long-cluster-name-for-the-platform-team",
        subnet="10.200.100.0/24",
        desired_state="stopped",
        actual_state="stopped",
    )
    browser.set_window_size(1400, 900)
    log_in(browser, live_server.url)
    browser.get(f"{live_server.url}/admin/clusters/cluster/")
    widths = browser.execute_script(
        "const results = document.querySelector('#changelist .results');"
        "return [results.scrollWidth, results.clientWidth,"
        " document.documentElement.scrollWidth, document.documentElement.clientWidth];"
    )
    assert (widths[0], widths[2]) == (widths[1], widths[3])
