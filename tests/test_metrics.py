"""GET /api/metrics (clusters/metrics.py serves what kindler/metrics.py gathers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.parser import text_string_to_metric_families

from kindler import multiprocess
from kindler.db.failover.pinning import pinned_alias
from kindler.db.telemetry import WorkersCollector
from kindler.multiprocess import live_gauge_pids
from tests.conftest import BOTH, WebServer, wait_for
from tests.factories import make_cluster, make_operation

TOKEN = "metrics-token-for-tests-0123456789"
pytestmark = pytest.mark.django_db(databases=BOTH)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return {(sample name, sorted labels): value} from an exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def scrape(client: Client) -> Any:
    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with override_settings(KINDLER_API_TOKEN=TOKEN):
            response = client.get("/api/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        return samples(response.content.decode())

    return scrape


def test_anonymous_scrape_is_refused_with_json(client: Client) -> None:
    response = client.get("/api/metrics")
    assert (response.status_code, response.json()["detail"]) == (
        401,
        "Authentication required: log in, or send Authorization: Bearer",
    )


@override_settings(KINDLER_API_TOKEN=TOKEN)
def test_a_wrong_token_is_refused(client: Client) -> None:
    response = client.get("/api/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert (response.status_code, response.json()["detail"]) == (401, "Invalid API token")


def test_the_api_token_gets_the_prometheus_text_format(client: Client) -> None:
    with override_settings(KINDLER_API_TOKEN=TOKEN):
        response = client.get("/api/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"


def test_a_logged_in_person_can_read_the_metrics(client: Client) -> None:
    client.force_login(User.objects.create_user("viewer", password="x"))
    assert client.get("/api/metrics").status_code == 200


@pytest.mark.postgres
def test_the_active_alias_is_reported(scrape: Any) -> None:
    figures = scrape()
    assert (
        figures[("kindler_database_active", (("alias", "postgres"),))],
        figures[("kindler_database_active", (("alias", "sqlite"),))],
    ) == (1.0, 0.0)


def test_the_routing_state_is_reported(scrape: Any) -> None:
    assert scrape()[("kindler_database_state", (("state", "primary"),))] == 1.0


def test_requests_are_counted_by_method_and_code(client: Client) -> None:
    labels = {"method": "GET", "code": "200"}
    before = REGISTRY.get_sample_value("kindler_http_requests_total", labels) or 0.0
    client.get("/api/health")
    assert REGISTRY.get_sample_value("kindler_http_requests_total", labels) == before + 1


@pytest.mark.postgres
def test_query_timings_are_reported_per_alias(scrape: Any) -> None:
    figures = scrape()
    assert figures[("kindler_db_query_duration_seconds_count", (("alias", "postgres"),))] > 0


def test_operations_are_reported_by_result(scrape: Any) -> None:
    cluster = make_cluster()
    make_operation(cluster, operation="create", status="failed")
    make_operation(cluster, operation="create", status="failed")
    figures = scrape()
    key = ("kindler_operations", (("operation", "create"), ("status", "failed")))
    assert figures[key] == 2.0


@pytest.mark.postgres
def test_the_journal_length_is_reported(scrape: Any) -> None:
    assert scrape()[("kindler_journal_entries", ())] == 0.0


@pytest.mark.postgres
def test_open_conflicts_are_reported(scrape: Any) -> None:
    assert scrape()[("kindler_conflicts_open", ())] == 0.0


@pytest.mark.postgres
def test_the_postgres_probe_is_reported(scrape: Any) -> None:
    assert scrape()[("kindler_postgres_up", ())] == 1.0


def test_operations_on_sqlite_are_read_from_sqlite(scrape: Any) -> None:
    with pinned_alias("sqlite"):
        make_operation(make_cluster(using="sqlite"), using="sqlite", status="timeout")
        figures = scrape()
    assert figures[("kindler_operations", (("operation", "create"), ("status", "timeout")))] == 1.0


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_web_server_workers_are_added_up(start_web_server: Callable[..., WebServer]) -> None:
    server = start_web_server(KINDLER_API_TOKEN=TOKEN)
    wait_for(server.answers)
    for _ in range(40):
        assert server.get("/api/health")[0] == 200
    status, text = server.get("/api/metrics", TOKEN)
    figures = samples(text)
    assert (
        status,
        figures[("kindler_http_requests_total", (("code", "200"), ("method", "GET")))],
    ) == (
        200,
        40.0,
    )


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_killed_worker_leaves_no_live_gauges(start_web_server: Callable[..., WebServer]) -> None:
    server = start_web_server(KINDLER_API_TOKEN=TOKEN)
    wait_for(lambda: every_worker_has_live_gauges(server))
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    # granian starts a worker in its place, which writes gauges of its own.
    wait_for(lambda: victim not in server.workers() and every_worker_has_live_gauges(server))
    workers = server.workers()
    files_before = live_gauge_pids(server.metrics)
    status, text = server.get("/api/metrics", TOKEN)
    reported = {
        int(dict(labels)["pid"])
        for name, labels in samples(text)
        if name == "kindler_db_probe_connections_open"
    }
    assert (status, files_before, reported, live_gauge_pids(server.metrics)) == (
        200,
        sorted([victim, *workers]),
        set(workers),
        workers,
    )


def every_worker_has_live_gauges(server: WebServer) -> bool:
    """Return True once both workers listen and each has written its live gauges."""
    workers = server.workers()
    if not len(workers) == server.listeners() == 2:
        return False  # the metrics folder may not exist yet
    return set(workers) <= set(live_gauge_pids(server.metrics))


def write_worker_file(folder: Path) -> None:
    """Write a metrics file as a web server worker does: one counter, counted once."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from prometheus_client import Counter; Counter('kindler_test', 'A test').inc()",
        ],
        env={**os.environ, multiprocess.ENV: str(folder)},
        check=True,
        timeout=60,
    )


def workers_registry(folder: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    WorkersCollector(registry, path=str(folder))
    return registry


def test_a_worker_file_not_yet_sized_holds_nothing(tmp_path: Path) -> None:
    write_worker_file(tmp_path)
    # A worker between making its file and sizing it.
    (tmp_path / "counter_4242.db").write_bytes(b"")
    assert workers_registry(tmp_path).get_sample_value("kindler_test_total") == 1.0


def test_a_worker_file_removed_while_read_is_listed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_worker_file(tmp_path)
    listed = multiprocess.metrics_files
    # The first listing names a dead worker's file that another reader then removed.
    stale = [[str(tmp_path / "gauge_livesum_4242.db"), *listed(tmp_path)]]
    monkeypatch.setattr(
        multiprocess, "metrics_files", lambda path: stale.pop() if stale else listed(path)
    )
    assert workers_registry(tmp_path).get_sample_value("kindler_test_total") == 1.0
    assert stale == []


def test_dead_workers_files_another_reader_removed_first_are_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    pid = int(ended.stdout)
    (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")

    def removed_by_another(pid: int, path: str) -> None:
        raise FileNotFoundError(f"{path}/gauge_livesum_{pid}.db")

    monkeypatch.setattr(prometheus_multiprocess, "mark_process_dead", removed_by_another)
    assert multiprocess.forget_dead_workers(tmp_path) == [pid]


def test_the_metrics_answer_while_a_worker_makes_its_file(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_worker_file(tmp_path)
    (tmp_path / "counter_4242.db").write_bytes(b"")
    monkeypatch.setenv(multiprocess.ENV, str(tmp_path))
    with override_settings(KINDLER_API_TOKEN=TOKEN):
        response = client.get("/api/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert samples(response.content.decode())[("kindler_test_total", ())] == 1.0
