"""Screenshots of the dashboard for the docs (docs/images), taken in a real browser.

Every run takes them, into a temporary folder; with KINDLER_SCREENSHOTS=docs/images they
replace the committed ones (they hold times, so they differ on every run).
"""

from __future__ import annotations

import os
import struct
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from clusters.models import Cluster
from tests.conftest import BOTH
from tests.factories import make_cluster, make_operation, make_registration, make_superuser

pytestmark = [pytest.mark.browser, pytest.mark.django_db(databases=BOTH, transaction=True)]

PAGES = {
    "dashboard.png": "/",
    "cluster-detail.png": "/clusters/dev/",
    "system.png": "/system/",
}
CREATE_OUTPUT = """\
INFO[0000] Prep: Network
INFO[0000] Created network 'k3d-dev'
INFO[0001] Starting new tools node...
INFO[0003] Creating node 'k3d-dev-server-0'
INFO[0012] Cluster 'dev' created successfully!
"""


def sample_inventory() -> None:
    """Save the sample environments with a short history each."""
    now = timezone.now()
    rows = [
        ("devops", "k3d", 18080, "running", "10.100.0.0/16"),
        ("dev", "kind", 18090, "stopped", ""),
        ("uat", "k3d", 18100, "running", "10.101.0.0/16"),
        ("prod", "k3d", 18110, "failed", "10.102.0.0/16"),
    ]
    for index, (name, provider, http, state, subnet) in enumerate(rows):
        cluster = make_cluster(
            name=name,
            provider=provider,
            http_port=http,
            https_port=http + 363,
            pf_port=19000 + index,
            subnet=subnet,
            actual_state=state,
            desired_state="stopped" if state == "stopped" else "present",
            last_reconciled_at=now,
            reconcile_error="k3d exited with status 1: port in use" if state == "failed" else "",
        )
        started = now - timedelta(minutes=30 - index)
        make_operation(
            cluster,
            status="success",
            command=(
                f"kind create cluster --name {name} --config - --wait 300s"
                if provider == "kind"
                else f"k3d cluster create {name} --servers 1 --agents 0 --wait --timeout 300s"
            ),
            log_output=CREATE_OUTPUT.replace("dev", name),
            exit_code=0,
            started_at=started,
            completed_at=started + timedelta(seconds=14),
        )
    dev = Cluster.objects.get(name="dev")
    stopped = now - timedelta(minutes=5)
    make_operation(
        dev,
        operation="stop",
        status="success",
        command="docker stop dev-control-plane",
        log_output="dev-control-plane\n",
        exit_code=0,
        started_at=stopped,
        completed_at=stopped + timedelta(seconds=2),
    )


def sign_in(browser: WebDriver, base_url: str) -> None:
    browser.get(f"{base_url}/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("password")
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(f"{base_url}/"))


def png_size(path: Path) -> tuple[int, int]:
    """Return the width and height a PNG file's header gives."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_the_docs_screenshots(browser: WebDriver, live_server: Any, tmp_path: Path) -> None:
    folder = Path(os.environ.get("KINDLER_SCREENSHOTS") or tmp_path)
    make_superuser()
    make_registration()  # as with scripts/run: a live reconciler for this host
    sample_inventory()
    sign_in(browser, live_server.url)
    browser.set_window_size(1280, 860)
    for filename, path in PAGES.items():
        browser.get(f"{live_server.url}{path}")
        WebDriverWait(browser, 10).until(
            lambda driver: driver.execute_script("return document.readyState") == "complete"
        )
        assert browser.find_elements(By.ID, "database-banner") == []
        assert browser.save_screenshot(str(folder / filename))
    viewport = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    sizes = {filename: png_size(folder / filename) for filename in PAGES}
    assert sizes == {filename: tuple(viewport) for filename in PAGES}
