from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connections

from clusters.models import Cluster
from kindler import __version__
from kindler.db.failover.monitor import State, monitor
from kindler.db.sync import identity, writethrough
from kindler.db.sync.mirror import mirror
from tests.conftest import BOTH, wait_for_state
from tests.factories import make_cluster
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH, transaction=True)


def run(*args: str, **options: Any) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.mark.postgres
def test_migrate_without_a_database_migrates_both_aliases() -> None:
    out, err = run("migrate", verbosity=1)
    assert (out.count("Database "), "Database postgres:" in out, "Database sqlite:" in out) == (
        2,
        True,
        True,
    )
    assert err == ""


def test_migrate_skips_an_unreachable_postgres_with_a_warning(pg: PostgresServer) -> None:
    pg.stop("immediate")
    out, err = run("migrate", verbosity=1)
    assert err.startswith("Skipping PostgreSQL, it cannot be reached: Connection refused")
    assert (out.count("Database "), "Database sqlite:" in out) == (1, True)


def test_migrate_with_database_migrates_only_that_alias() -> None:
    out, _ = run("migrate", database="sqlite", verbosity=1)
    assert "Database " not in out
    assert "No migrations to apply." in out


@pytest.mark.postgres
def test_createsuperuser_uses_the_active_database_without_naming_it() -> None:
    run("createsuperuser", interactive=False, username="root", email="root@example.com")
    assert list(User.objects.using("postgres").values_list("username", "is_superuser")) == [
        ("root", True)
    ]


@pytest.mark.postgres
def test_dbstatus_reports_postgres_as_primary() -> None:
    out, _ = run("dbstatus")
    lines = out.splitlines()
    assert lines[0] == "Active database: postgres"
    assert lines[1].startswith("State:           primary since ")
    assert lines[2].startswith("PostgreSQL:      reachable, ")


def test_dbstatus_says_why_the_state_is_what_it_is() -> None:
    lines = run("dbstatus")[0].splitlines()
    snapshot = monitor.snapshot()
    assert lines[1] == (
        f"State:           primary since {snapshot.since.isoformat()} ({snapshot.cause})"
    )


def test_dbstatus_shows_the_codes_version_and_the_databases_schema() -> None:
    lines = run("dbstatus")[0].splitlines()
    assert lines[3] == f"Schema:          code {__version__}, database {__version__}"


@pytest.mark.postgres
def test_dbstatus_lists_recent_sync_runs_not_only_the_last() -> None:
    make_cluster(using="postgres", name="dev")
    with writethrough.suppressed():
        make_cluster(using="postgres", name="uat", http_port=18100, https_port=18453, pf_port=19010)
    mirror(full=True)
    with writethrough.suppressed():
        Cluster.objects.using("postgres").filter(name="uat").delete()
    mirror()
    lines = run("dbstatus")[0].splitlines()
    recent = lines[lines.index("Recent runs:") + 1 :]
    assert [line.split(" ok in ")[-1].split(": ", 1)[-1] for line in recent[:2]] == [
        "pulled 0, deleted 1, skipped 0, accounts 0",
        "pulled 1, deleted 0, skipped 0, accounts 0",
    ]
    report = json.loads(run("dbstatus", "--json")[0])
    assert [(r["kind"], r["result"]) for r in report["sync_runs"][:2]] == [
        ("mirror", "pulled 0, deleted 1, skipped 0, accounts 0"),
        ("mirror", "pulled 1, deleted 0, skipped 0, accounts 0"),
    ]


def test_dbstatus_reports_an_unreachable_postgres(pg: PostgresServer) -> None:
    pg.stop("immediate")
    out, _ = run("dbstatus")
    lines = out.splitlines()
    assert lines[0] == "Active database: sqlite"
    assert lines[1].startswith("State:           fallback since ")
    assert lines[2].startswith("PostgreSQL:      unreachable: Connection refused")


def test_dbstatus_json_has_the_health_fields(pg: PostgresServer) -> None:
    report = json.loads(run("dbstatus", "--json")[0])
    assert (
        report["active"],
        report["state"],
        report["state_cause"],
        report["postgres"]["configured"],
    ) == ("postgres", "primary", monitor.snapshot().cause, True)
    assert report["postgres"]["reachable"] is True
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    connections.close_all()
    report = json.loads(run("dbstatus", "--json")[0])
    assert (
        report["active"],
        report["postgres"]["reachable"],
        report["postgres"]["latency_ms"],
    ) == (
        "sqlite",
        False,
        None,
    )


def test_createsuperuser_during_an_outage_is_refused_with_a_message(pg: PostgresServer) -> None:
    pg.stop("immediate")
    wait_for_state(State.FALLBACK)
    with pytest.raises(CommandError) as caught:
        run("createsuperuser", interactive=False, username="late", email="late@example.com")
    assert str(caught.value) == (
        "Accounts cannot be changed while PostgreSQL is unreachable: Kindler is running on its "
        "local copy. Try again once PostgreSQL is back."
    )
    assert User.objects.using("sqlite").filter(username="late").exists() is False


@pytest.mark.postgres
def test_dbstatus_names_the_primary_node() -> None:
    mirror()
    current = identity.read()
    line = next(line for line in run("dbstatus")[0].splitlines() if line.startswith("Primary"))
    assert line.startswith(
        f"Primary node:    {current.server} (system {current.system_identifier}, "
        f"timeline {current.timeline}), checked "
    )
