"""The reconciler registry (clusters/registry.py): registration, heartbeat, expiry, outages."""

from __future__ import annotations

import json
import os
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import close_old_connections, router
from django.test import Client
from django.utils import timezone

from clusters import registry
from clusters.drivers import ClusterStatus
from clusters.models import Registration
from clusters.registry import Heartbeat
from kindler import __version__
from kindler.db.failover.monitor import State
from kindler.db.failover.pinning import pinned_alias
from tests.conftest import BOTH, wait_for, wait_for_state
from tests.factories import make_registration, make_superuser
from tests.fakes import FOLDER as FAKES_FOLDER
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH)

PROVIDERS = {"k3d": "v5.7.4", "kind": "v0.24.0"}


@pytest.fixture
def admin_user(db: None) -> Any:
    """Override pytest-django's: an admin on whichever database is pinned."""
    return make_superuser()


def only_k3d_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave the fake k3d (and the Python it runs with) as the only commands on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "k3d").symlink_to(FAKES_FOLDER / "k3d")
    (folder / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(folder))


def test_the_providers_on_path_are_found_with_their_versions() -> None:
    assert registry.find_providers() == PROVIDERS


def test_a_provider_missing_from_path_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_k3d_on_path(tmp_path, monkeypatch)
    assert registry.find_providers() == {"k3d": "v5.7.4"}


def test_first_run_advice_names_both_install_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert registry.first_run_advice() == (
        "Neither k3d nor kind is on PATH, so this machine's reconciler can create no cluster. "
        "Install Docker and one of them (k3d: https://k3d.io/#installation, kind: "
        "https://kind.sigs.k8s.io/docs/user/quick-start/#installation), or run the reconciler "
        "on a machine that has them."
    )


def test_no_advice_when_a_provider_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_k3d_on_path(tmp_path, monkeypatch)
    assert registry.first_run_advice() is None


def test_a_heartbeat_registers_the_process(alias: str, settings: Any) -> None:
    settings.KINDLER_HOST_NAME = "docker-1"
    heartbeat = Heartbeat()
    assert heartbeat.beat() is True
    row = Registration.objects.get()
    assert (row.key, row.host, row.pid, row.version, row.providers) == (
        heartbeat.key,
        "docker-1",
        os.getpid(),
        __version__,
        PROVIDERS,
    )
    assert row.started_at == heartbeat.started_at
    assert row.last_seen >= row.started_at


def test_later_heartbeats_move_last_seen_on_one_row(alias: str) -> None:
    heartbeat = Heartbeat(providers={})
    heartbeat.beat()
    first = Registration.objects.get().last_seen
    time.sleep(0.01)
    heartbeat.beat()
    assert Registration.objects.count() == 1
    assert Registration.objects.get().last_seen > first


def test_a_registration_is_live_for_three_intervals(alias: str, settings: Any) -> None:
    settings.KINDLER_HEARTBEAT_INTERVAL = 10
    make_registration(host="fresh", seconds_ago=29)
    make_registration(host="expired", seconds_ago=31)
    assert [entry.host for entry in registry.live_registrations()] == ["fresh"]


def test_a_new_registration_forgets_reconcilers_gone_for_a_day(alias: str) -> None:
    make_registration(host="gone", seconds_ago=2 * 86400)
    make_registration(host="recent", seconds_ago=3600)
    Heartbeat(host="docker-1", providers={}).beat()
    assert sorted(Registration.objects.values_list("host", flat=True)) == ["docker-1", "recent"]


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_heartbeat_thread_keeps_a_long_pass_live_and_expires_after_stop(
    settings: Any,
) -> None:
    settings.KINDLER_HEARTBEAT_INTERVAL = 0.5
    heartbeat = Heartbeat(host="docker-1", providers={})
    heartbeat.start()
    try:
        # Four intervals with no pass at all: the thread alone keeps it live.
        time.sleep(2.0)
        assert [entry.host for entry in registry.live_registrations()] == ["docker-1"]
    finally:
        heartbeat.stop()
    last_beat = Registration.objects.get().last_seen
    wait_for(lambda: registry.live_registrations() == [], seconds=10, every=0.02)
    # No longer live three intervals (1.5 s) after the last beat, not before.
    assert 1.5 <= (timezone.now() - last_beat).total_seconds() <= 3.0


def test_the_health_endpoint_lists_live_reconcilers(alias: str, admin_client: Client) -> None:
    entry = make_registration(host="docker-1", providers={"k3d": "v5.7.4"})
    make_registration(host="docker-2", seconds_ago=3600)
    reconcilers = admin_client.get("/api/health").json()["reconcilers"]
    assert reconcilers == [
        {
            "host": "docker-1",
            "pid": 4242,
            "version": "0.1.0",
            "providers": {"k3d": "v5.7.4"},
            "started_at": entry.started_at.isoformat(),
            "last_seen": entry.last_seen.isoformat(),
            "observed_at": None,
        }
    ]


def test_the_public_health_endpoint_names_no_reconciler(alias: str, client: Client) -> None:
    make_registration(host="docker-1", providers={"k3d": "v5.7.4"})
    assert client.get("/api/health").json() == {"status": "healthy"}


def test_dbstatus_shows_the_live_reconcilers(alias: str) -> None:
    make_registration(host="docker-1", providers={"k3d": "v5.7.4", "kind": "v0.24.0"})
    out = StringIO()
    call_command("dbstatus", stdout=out)
    lines = out.getvalue().splitlines()
    at = lines.index("Reconcilers:")
    assert lines[at + 1].startswith(
        "  docker-1 (pid 4242, Kindler 0.1.0): k3d v5.7.4, kind v0.24.0; seen "
    )
    assert lines[at + 1].endswith(" s ago")


def test_dbstatus_says_when_no_reconciler_is_live(alias: str) -> None:
    out = StringIO()
    call_command("dbstatus", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[lines.index("Reconcilers:") + 1] == (
        "  none live: start `scripts/manage reconcile` on each Docker host"
    )


def test_dbstatus_json_lists_the_live_reconcilers(alias: str) -> None:
    make_registration(host="docker-1", providers={"k3d": "v5.7.4"})
    out = StringIO()
    call_command("dbstatus", "--json", stdout=out)
    [entry] = json.loads(out.getvalue())["reconcilers"]
    assert (entry["host"], entry["providers"]) == ("docker-1", {"k3d": "v5.7.4"})


def test_the_system_page_lists_the_live_reconcilers(alias: str, admin_client: Client) -> None:
    make_registration(host="docker-1", providers={"k3d": "v5.7.4"})
    response = admin_client.get("/system/")
    assert response.status_code == 200
    [section] = [s for s in response.context["sections"] if s.key == "reconcilers"]
    assert section.lines[0].startswith("docker-1 (pid 4242, Kindler 0.1.0): k3d v5.7.4; seen ")
    assert "<h2>Reconcilers</h2>" in response.text


def test_metrics_count_live_reconcilers_and_their_providers(
    alias: str, admin_client: Client
) -> None:
    make_registration(host="docker-1", providers={"k3d": "v5.7.4"})
    make_registration(host="docker-1", providers={"k3d": "v5.7.4", "kind": "v0.24.0"})
    make_registration(host="docker-2", seconds_ago=3600)
    text = admin_client.get("/api/metrics").text
    assert 'kindler_reconcilers_live{host="docker-1"} 2.0' in text
    assert 'kindler_reconcilers_live{host="docker-2"}' not in text
    assert (
        'kindler_reconciler_providers{host="docker-1",provider="k3d",version="v5.7.4"} 2.0' in text
    )
    assert (
        'kindler_reconciler_providers{host="docker-1",provider="kind",version="v0.24.0"} 1.0'
        in text
    )


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_the_heartbeat_registers_again_on_sqlite_and_back_across_an_outage(
    pg: PostgresServer, settings: Any
) -> None:
    # A connection from before a server restart an earlier test made can fail
    # the first beat (and declare an outage the monitor ends at once): this
    # test is about the outage it makes itself, so it starts from a beat that took.
    close_old_connections()
    heartbeat = Heartbeat(host="docker-1", providers={"k3d": "v5.7.4"})
    wait_for(lambda: heartbeat.beat() and router_alias() == "postgres", seconds=30)
    assert Registration.objects.using("postgres").filter(key=heartbeat.key).exists() is True
    pg.stop("immediate")
    # The beat that meets the outage reports it; the next one goes to SQLite.
    wait_for(lambda: heartbeat.beat() and router_alias() == "sqlite", seconds=30)
    with pinned_alias("sqlite"):
        assert [entry.host for entry in registry.live_registrations()] == ["docker-1"]
    pg.ensure_running()
    wait_for_state(State.PRIMARY, timeout=60)
    beaten = timezone.now()
    assert heartbeat.beat() is True
    # Registered on PostgreSQL again (the row is created anew if the outage lost it).
    row = Registration.objects.using("postgres").get(key=heartbeat.key)
    assert (row.host, row.last_seen >= beaten) == ("docker-1", True)


def router_alias() -> str:
    return str(router.db_for_write(Registration))


def test_the_admin_lists_registrations_read_only(alias: str, admin_client: Client) -> None:
    entry = make_registration(host="docker-1")
    listing = admin_client.get("/admin/clusters/registration/")
    assert (listing.status_code, "docker-1" in listing.text) == (200, True)
    assert admin_client.get("/admin/clusters/registration/add/").status_code == 403
    change = admin_client.post(f"/admin/clusters/registration/{entry.pk}/change/", {"pid": 1})
    assert (change.status_code, Registration.objects.get().pid) == (403, 4242)


def test_an_observation_keeps_only_names_a_cluster_can_have() -> None:
    names = ["dev", "Made-By-Hand", "\ud800", "nl\n"]
    listing = {name: ClusterStatus(name, "running", 1, 1) for name in names}
    assert registry.observation_data({"kind": listing, "k3d": "k3d not found"}) == {
        "kind": {"clusters": {"dev": ["running", 1, 1]}},
        "k3d": {"error": "k3d not found"},
    }
