"""Query statistics, the slow-query log and the switch history (kindler/db/telemetry.py)."""

from __future__ import annotations

import json
import logging
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connections
from django.test import override_settings
from prometheus_client import REGISTRY

from clusters.models import Cluster
from kindler.db import telemetry
from kindler.db.failover.monitor import State, monitor
from kindler.db.models import KnownDatabase
from kindler.db.sync import identity
from kindler.db.sync.mirror import mirror
from tests.conftest import BOTH, wait_for_state


def figures(alias: str) -> telemetry.AliasStats:
    found = [item for item in telemetry.query_stats(REGISTRY) if item.alias == alias]
    return found[0] if found else telemetry.AliasStats(alias, 0, 0, 0, 0.0, 0.0)


@override_settings(KINDLER_SLOW_QUERY_MS=200)
def test_record_query_adds_count_total_and_max() -> None:
    telemetry.record_query("figures-alias", "SELECT 1", 0.25)
    telemetry.record_query("figures-alias", "SELECT 1", 0.5)
    telemetry.record_query("figures-alias", "SELECT 1", 0.125)
    assert figures("figures-alias") == telemetry.AliasStats(
        "figures-alias", count=3, errors=0, slow=2, total_ms=875.0, max_ms=500.0
    )


@override_settings(KINDLER_SLOW_QUERY_MS=200)
def test_only_queries_above_the_threshold_are_slow() -> None:
    telemetry.record_query("threshold-alias", "SELECT 1", 0.199)
    telemetry.record_query("threshold-alias", "SELECT 2", 0.2)
    assert figures("threshold-alias").slow == 1


@pytest.mark.django_db(databases=BOTH)
def test_every_query_on_an_alias_is_counted(alias: str) -> None:
    before = figures(alias).count
    Cluster.objects.using(alias).count()
    assert figures(alias).count - before == 1


@pytest.mark.django_db(databases=BOTH)
def test_a_failing_query_is_counted_as_an_error(alias: str) -> None:
    before = figures(alias).errors
    with pytest.raises(DatabaseError), connections[alias].cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    assert figures(alias).errors - before == 1


@pytest.mark.django_db(databases=BOTH)
@override_settings(KINDLER_SLOW_QUERY_MS=0)
def test_slow_query_log_has_the_sql_but_not_the_parameters(
    alias: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="kindler.db.slow"):
        Cluster.objects.using(alias).filter(name="secret-value-0451").count()
    [record] = caplog.records
    assert "secret-value-0451" not in record.getMessage()
    assert record.getMessage().startswith(f"Slow query on {alias} (")
    assert record.getMessage().endswith(
        'FROM "clusters_cluster" WHERE "clusters_cluster"."name" = %s'
    )


@pytest.mark.django_db(databases=BOTH)
@override_settings(KINDLER_SLOW_QUERY_MS=60_000)
def test_fast_queries_are_not_logged(alias: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kindler.db.slow"):
        Cluster.objects.using(alias).count()
    assert caplog.records == []


@pytest.mark.django_db(databases=BOTH)
def test_the_observer_is_installed_once_per_connection(alias: str) -> None:
    connection = connections[alias]
    connection.ensure_connection()
    telemetry.observe_connection(sender=None, connection=connection)
    observers = [w for w in connection.execute_wrappers if isinstance(w, telemetry.QueryObserver)]
    assert len(observers) == 1


@pytest.fixture
def history_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kindler.db.switches"
    monkeypatch.setattr(telemetry, "history_path", lambda: path)
    return path


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_switch_is_kept_in_the_history(history_file: Path) -> None:
    monitor.mark_down("test outage")
    wait_for_state(State.PRIMARY)
    latest = telemetry.switch_history()
    assert [(e["source"], e["target"]) for e in latest[:3]] == [
        ("recovering", "primary"),
        ("fallback", "recovering"),
        ("primary", "fallback"),
    ]
    assert latest[2]["cause"] == "test outage"


@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_switch_is_counted(history_file: Path) -> None:
    sample = "kindler_database_switches_total"
    labels = {"source": "primary", "target": "fallback"}
    before = REGISTRY.get_sample_value(sample, labels) or 0.0
    monitor.mark_down("test outage")
    wait_for_state(State.PRIMARY)
    assert REGISTRY.get_sample_value(sample, labels) == before + 1


def test_a_damaged_history_line_is_skipped(history_file: Path) -> None:
    history_file.write_text(
        '{"at": "2026-01-01T00:00:00+00:00", "source": "primary", "target": "fallback",'
        ' "cause": "x", "seconds_in_source": 1.0, "pid": 1}\n{"at": "2026-01-0'
    )
    assert [entry["cause"] for entry in telemetry.switch_history()] == ["x"]


def test_the_history_is_trimmed_to_the_last_entries(history_file: Path) -> None:
    history_file.write_text("".join(f'{{"n": {n}}}\n' for n in range(200)))
    telemetry._trim(history_file)
    assert history_file.read_text().splitlines()[0] == '{"n": 150}'


@pytest.mark.django_db(databases=BOTH)
def test_connection_states_name_the_active_alias() -> None:
    states = {state["alias"]: state for state in telemetry.connection_states(monitor.snapshot())}
    assert (states["postgres"]["active"], states["sqlite"]["active"]) == (True, False)


@pytest.mark.django_db(databases=BOTH)
def test_connection_states_count_kindler_connections_on_the_server() -> None:
    postgres = telemetry.connection_states(monitor.snapshot())[0]
    assert postgres["server_connections"] >= 1


def test_report_lines_show_queries_connections_and_switches() -> None:
    data = {
        "queries_source": "web server",
        "slow_query_ms": 200.0,
        "queries": [
            {
                "alias": "postgres",
                "count": 10,
                "errors": 1,
                "slow": 2,
                "total_ms": 50.0,
                "mean_ms": 5.0,
                "max_ms": 30.0,
            }
        ],
        "connections": [
            {
                "alias": "postgres",
                "active": True,
                "state": "up",
                "latency_ms": 1.25,
                "error": None,
                "server_connections": 3,
            },
            {
                "alias": "sqlite",
                "active": False,
                "state": "up",
                "path": "/data/kindler.db",
                "size_bytes": 4096,
                "wal_bytes": 0,
            },
        ],
        "switches": [
            {
                "at": "2026-01-01T00:00:00+00:00",
                "source": "primary",
                "target": "fallback",
                "seconds_in_source": 12.5,
                "cause": "probe failed: timeout",
            }
        ],
    }
    assert telemetry.report_lines(data) == [
        "Queries (web server, slow above 200 ms):",
        "  postgres  10 queries, 1 failed, 2 slow, total 50.0 ms, mean 5.00 ms, max 30.0 ms",
        "Connections:",
        "  postgres  up (active): 1.2 ms, 3 Kindler connections on the server",
        "  sqlite    up: /data/kindler.db, 4096 bytes, WAL 0 bytes",
        "Switches (newest first, last 50):",
        "  2026-01-01T00:00:00+00:00  primary -> fallback after 12.5 s: probe failed: timeout",
    ]


@pytest.mark.django_db(databases=BOTH)
def test_dbstatus_prints_the_query_statistics(history_file: Path) -> None:
    out = StringIO()
    call_command("dbstatus", stdout=out)
    assert "Queries (this process, slow above 200 ms):" in out.getvalue().splitlines()


@pytest.mark.django_db(databases=BOTH)
def test_dbstatus_json_has_the_switch_history(history_file: Path) -> None:
    history_file.write_text(
        '{"at": "2026-01-01T00:00:00+00:00", "source": "primary", "target": "fallback",'
        ' "cause": "x", "seconds_in_source": 1.0, "pid": 1}\n'
    )
    out = StringIO()
    call_command("dbstatus", "--json", stdout=out)
    assert json.loads(out.getvalue())["switches"] == [
        {
            "at": "2026-01-01T00:00:00+00:00",
            "source": "primary",
            "target": "fallback",
            "cause": "x",
            "seconds_in_source": 1.0,
            "pid": 1,
        }
    ]


@pytest.mark.postgres
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_new_primary_timeline_is_kept_in_the_history(history_file: Path) -> None:
    mirror(full=True)
    current = identity.read()
    KnownDatabase.objects.using("sqlite").update(timeline=(current.timeline or 0) + 1)
    mirror()
    node = f"{current.server} (system {current.system_identifier}, timeline"
    before, after = f"{node} {current.timeline})", f"{node} {(current.timeline or 0) + 1})"
    entry = telemetry.switch_history()[0]
    assert (entry["cause"], entry["node"]) == (
        f"PostgreSQL's primary changed from {after} to {before}",
        {"source": after, "target": before},
    )
