"""Meeting a PostgreSQL that is new, replaced or restored: local rows are never lost."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from datetime import UTC, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connections

from clusters.models import Cluster, OperationLog
from kindler.db.models import Conflict, KnownDatabase, RestoredRow, Tombstone
from kindler.db.sync import identity
from kindler.db.sync.adopt import check, reconcile_identity
from kindler.db.sync.journal import journal_suppressed
from kindler.db.sync.mirror import mirror, prune_tombstones
from tests.conftest import BOTH
from tests.db.sync.syncing import conflicts, kindler, settings_base_dir
from tests.factories import cluster_fields, make_cluster, make_operation
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.django_db(databases=BOTH)


@pytest.fixture(autouse=True)
def _first_contact() -> None:
    """Start as a SQLite file that has not met this PostgreSQL (recovery may have, meanwhile)."""
    KnownDatabase.objects.using("sqlite").all().delete()


@pytest.fixture(autouse=True)
def _no_tombstones() -> None:
    """Start with no tombstones, though some were committed outside this test's transaction."""
    # By the monitor's mirror on its own connection, or an earlier test on this worker.
    Tombstone.objects.using("sqlite").all().delete()


def embedded_cluster(**fields: Any) -> Cluster:
    """Create a cluster in SQLite only, as an embedded Kindler (no PostgreSQL) had it."""
    with journal_suppressed():
        return make_cluster(using="sqlite", **fields)


def postgres_names() -> list[str]:
    return sorted(Cluster.objects.using("postgres").values_list("name", flat=True))


def restored() -> list[tuple[str, str]]:
    rows = RestoredRow.objects.using("postgres").filter(model="clusters.cluster")
    return sorted(rows.values_list("name", "why"))


def test_a_new_database_adopts_clusters_logs_and_the_admin_with_its_password() -> None:
    cluster = embedded_cluster(name="dev")
    with journal_suppressed():
        operation = make_operation(cluster, using="sqlite")
        User.objects.using("sqlite").bulk_create(
            [User(username="admin", password=make_password("pw"), is_superuser=True)]
        )
    report = reconcile_identity()
    admin = User.objects.using("postgres").get(username="admin")
    assert (report.why, postgres_names(), restored()) == ("adopted", ["dev"], [("dev", "adopted")])
    assert Cluster.objects.using("postgres").get(name="dev").uid == cluster.uid
    assert OperationLog.objects.using("postgres").get().uid == operation.uid
    assert admin.password == User.objects.using("sqlite").get(username="admin").password


def test_adopting_says_it_once_as_progress(caplog: pytest.LogCaptureFixture) -> None:
    for name in ("dev", "uat", "prod"):
        cluster = embedded_cluster(name=name)
    with journal_suppressed():
        make_operation(cluster, using="sqlite")
    with caplog.at_level(logging.INFO, logger="kindler.db"):
        reconcile_identity()
    logged = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert [level for level, _ in logged] == ["INFO", "INFO"]
    assert logged[0][1].startswith("Checking PostgreSQL (adopted) against this file: first contact")
    assert re.fullmatch(
        r"Carried 3 clusters and 1 operation log of this file into PostgreSQL in \d+\.\d s",
        logged[1][1],
    )


def test_a_restored_database_names_each_row_it_gets_back(caplog: pytest.LogCaptureFixture) -> None:
    mirror()
    embedded_cluster(name="lost")
    KnownDatabase.objects.using("sqlite").update(position=identity.read().position + 1000)
    with caplog.at_level(logging.WARNING, logger="kindler.db"):
        reconcile_identity()
    wrote = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Wrote ")]
    uid = Cluster.objects.using("sqlite").get(name="lost").uid
    assert wrote == [f"Wrote clusters.cluster lost ({uid}) back into PostgreSQL: restored"]


def test_an_account_postgres_has_keeps_postgres_password() -> None:
    theirs = User.objects.db_manager("postgres").create_user("admin", password="theirs-pass")
    with journal_suppressed():
        User.objects.using("sqlite").bulk_create(
            [User(username="admin", password=make_password("mine"), is_superuser=True)]
        )
    reconcile_identity()
    assert User.objects.using("postgres").get(username="admin").password == theirs.password
    assert User.objects.using("sqlite").get(username="admin").password == theirs.password


def test_adopting_twice_changes_nothing() -> None:
    embedded_cluster(name="dev")
    reconcile_identity()
    again = reconcile_identity()
    assert (again.why, postgres_names(), len(restored())) == (None, ["dev"], 1)


def test_a_name_postgres_holds_under_another_uid_becomes_a_conflict() -> None:
    mine = embedded_cluster(name="dev")
    theirs = make_cluster(using="postgres", name="dev")
    reconcile_identity()
    assert (conflicts(), on("postgres", "dev").uid) == ([("insert/insert", "dev")], theirs.uid)
    # SQLite shows PostgreSQL's row; the local one is kept in the conflict.
    assert (on("sqlite", "dev").uid, mine.uid != theirs.uid) == (theirs.uid, True)


def test_a_port_postgres_holds_becomes_a_conflict() -> None:
    embedded_cluster(name="mine", http_port=45080, https_port=45443, pf_port=45000)
    make_cluster(using="postgres", name="theirs", http_port=46080, https_port=45000, pf_port=46000)
    reconcile_identity()
    assert (conflicts(), postgres_names()) == ([("insert/insert", "mine")], ["theirs"])


def test_an_unchanged_database_needs_no_merge() -> None:
    mirror()
    assert check() is None


def test_a_change_log_that_went_back_is_a_restore() -> None:
    mirror()
    KnownDatabase.objects.using("sqlite").update(position=identity.read().position + 1000)
    assert check() == "restored"


def test_a_tombstone_still_deletes_the_local_row() -> None:
    make_cluster(using="postgres", name="gone")
    mirror()
    with connections["postgres"].cursor() as cursor:
        cursor.execute("DELETE FROM clusters_cluster WHERE name = 'gone'")
    KnownDatabase.objects.using("sqlite").update(database_uuid=None)
    reconcile_identity()
    assert (postgres_names(), Cluster.objects.using("sqlite").count()) == ([], 0)


def test_sync_db_push_all_carries_every_local_row() -> None:
    embedded_cluster(name="dev")
    out = StringIO()
    call_command("sync_db", "--push", "--all", stdout=out, stderr=StringIO())
    uid = Cluster.objects.using("sqlite").get().uid
    assert out.getvalue().splitlines()[1:3] == [
        "Carried 1 local row(s) into PostgreSQL, conflicts 0; accounts added 0.",
        "Rows written back into PostgreSQL (1):",
    ]
    assert out.getvalue().splitlines()[3] == f"  adopted clusters.cluster dev {uid}"
    assert postgres_names() == ["dev"]


def test_sync_db_lists_the_conflicts_resolve_takes() -> None:
    embedded_cluster(name="dev")
    make_cluster(using="postgres", name="dev")
    out = StringIO()
    with pytest.raises(CommandError, match=r"^1 conflict\(s\) remain\.$"):
        call_command("sync_db", stdout=out, stderr=StringIO())
    uid = Conflict.objects.using("postgres").get().uid
    assert f"  {uid} insert/insert dev" in out.getvalue().splitlines()


def on(alias: str, name: str) -> Cluster:
    return Cluster.objects.using(alias).get(name=name)


def sql(server: PostgresServer, statement: str) -> None:
    """Run statement with psql, outside this process (its connections follow the failover)."""
    server._run(
        "psql",
        "-h",
        str(server.socketdir),
        "-p",
        str(server.port),
        "-U",
        server.user,
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        statement,
    )


def recreate(server: PostgresServer, dump: Path | None) -> None:
    """Drop the test database and create it again: empty, or from dump."""
    name = connections["postgres"].settings_dict["NAME"]
    connections.close_all()
    sql(server, f'DROP DATABASE "{name}" WITH (FORCE)')
    sql(server, f'CREATE DATABASE "{name}"')
    if dump is not None:
        server._run(
            "pg_restore",
            "-h",
            str(server.socketdir),
            "-p",
            str(server.port),
            "-U",
            server.user,
            "-d",
            name,
            str(dump),
        )


def dump(server: PostgresServer) -> Path:
    name = connections["postgres"].settings_dict["NAME"]
    path = server.root / "kindler.dump"
    server._run(
        "pg_dump",
        "-h",
        str(server.socketdir),
        "-p",
        str(server.port),
        "-U",
        server.user,
        "-Fc",
        "-f",
        str(path),
        name,
    )
    return path


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_restore_from_an_older_dump_gets_the_newer_rows_back(
    pg: PostgresServer, no_probes: None
) -> None:
    for name in ("r1", "r2", "r3"):
        make_cluster(using="postgres", name=name)
    mirror()
    older = dump(pg)
    for name in ("r4", "r5"):
        make_cluster(using="postgres", name=name)
    mirror()
    recreate(pg, older)
    report = reconcile_identity()
    assert (report.why, postgres_names()) == ("restored", ["r1", "r2", "r3", "r4", "r5"])
    assert restored() == [("r4", "restored"), ("r5", "restored")]


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_an_empty_database_in_place_of_postgres_gets_everything_back(
    pg: PostgresServer, no_probes: None
) -> None:
    for name in ("a", "b"):
        make_operation(make_cluster(using="postgres", name=name), using="postgres")
    mirror()
    recreate(pg, None)
    call_command("migrate", "--database", "postgres", verbosity=0)
    report = reconcile_identity()
    assert (report.why, postgres_names()) == ("restored", ["a", "b"])
    assert OperationLog.objects.using("postgres").count() == 2


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_two_instances_adopting_at_once_merge_by_uid_and_keep_clashes(
    kindler_env: dict[str, Any], tmp_path: Path
) -> None:
    envs = []
    for index, name in enumerate(("one", "two")):
        env = {**kindler_env, "SQLITE_PATH": str(tmp_path / f"{name}.db")}
        kindler(env, "migrate", "--database", "sqlite", "-v", "0")
        rows = [
            cluster_fields(name=f"{name}-only"),
            cluster_fields(name="both"),
            # Both files hold a cluster on port 45080, under different names.
            cluster_fields(
                name=f"{name}-port",
                http_port=45080 + index * 1000,
                pf_port=45000,
                https_port=45443 + index * 1000,
            ),
        ]
        code = (
            "from clusters.models import Cluster\n"
            "from kindler.db.sync.journal import journal_suppressed\n"
            "with journal_suppressed():\n"
            f"    Cluster.objects.using('sqlite').bulk_create([Cluster(**f) for f in {rows!r}])\n"
        )
        kindler(env, "shell", "-c", code)
        envs.append(env)
    runs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "sync_db", "--pull"],
            cwd=str(settings_base_dir()),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]
    results = [run.communicate(timeout=120) for run in runs]
    # Whichever finishes last sees both conflicts and exits 2.
    assert max(run.returncode for run in runs) == 2, results
    names = postgres_names()
    assert [name for name in names if not name.endswith("-port")] == [
        "both",
        "one-only",
        "two-only",
    ]
    assert sorted(kind for kind, _ in conflicts()) == ["insert/insert", "insert/insert"]
    assert Cluster.objects.using("postgres").filter(pf_port=45000).count() == 1


def test_a_port_postgres_holds_on_another_host_is_no_conflict() -> None:
    embedded_cluster(name="mine", host="docker-1", http_port=45080, https_port=45443, pf_port=45000)
    make_cluster(
        using="postgres", name="theirs", host="docker-2", http_port=46080, https_port=45000,
        pf_port=46000,
    )  # fmt: skip
    reconcile_identity()
    assert (conflicts(), postgres_names()) == ([], ["mine", "theirs"])


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_restore_does_not_bring_back_clusters_deleted_after_the_backup(
    pg: PostgresServer, no_probes: None
) -> None:
    names = [f"gone-{index:02}" for index in range(15)]
    for name in [*names, "kept"]:
        make_cluster(using="postgres", name=name)
    mirror()
    backup = dump(pg)
    for name in names:
        on("postgres", name).delete()
    mirror()
    recreate(pg, backup)
    report = reconcile_identity()
    assert (report.why, postgres_names()) == ("restored", ["kept"])
    assert restored() == [(name, "deleted") for name in names]


@pytest.mark.slow
@pytest.mark.django_db(databases=BOTH, transaction=True)
def test_a_restore_keeps_a_deleted_cluster_changed_since_as_a_conflict(
    pg: PostgresServer, no_probes: None
) -> None:
    make_cluster(using="postgres", name="edited")
    mirror()
    backup = dump(pg)
    on("postgres", "edited").delete()
    mirror()
    recreate(pg, backup)
    sql(pg, "SELECT 1")
    with connections["postgres"].cursor() as cursor:
        cursor.execute("UPDATE clusters_cluster SET version = version + 5 WHERE name = 'edited'")
    report = reconcile_identity()
    assert (report.why, postgres_names(), restored()) == ("restored", ["edited"], [])
    assert conflicts() == [("delete/update", "edited")]
    assert on("sqlite", "edited").version == on("postgres", "edited").version


def test_a_delete_leaves_a_tombstone_and_a_new_row_with_its_uid_takes_it_away() -> None:
    cluster = embedded_cluster(name="dev")
    with journal_suppressed():
        on("sqlite", "dev").delete()
    tombstones = list(Tombstone.objects.using("sqlite").values_list("model", "uid", "version"))
    assert tombstones == [("clusters.cluster", cluster.uid.hex, 1)]
    with journal_suppressed():
        make_cluster(using="sqlite", name="dev", uid=cluster.uid)
    assert Tombstone.objects.using("sqlite").count() == 0


def test_tombstones_older_than_the_setting_go(settings: Any) -> None:
    embedded_cluster(name="dev")
    with journal_suppressed():
        on("sqlite", "dev").delete()
    Tombstone.objects.using("sqlite").update(deleted_at="2000-01-01T00:00:00.000Z")
    settings.KINDLER_TOMBSTONE_DAYS = 30
    assert (prune_tombstones(), Tombstone.objects.using("sqlite").count()) == (1, 0)


def test_a_new_timeline_is_a_failover() -> None:
    mirror()
    KnownDatabase.objects.using("sqlite").update(timeline=(identity.read().timeline or 0) + 1)
    assert check() == "failover"


def test_another_node_answering_is_a_failover() -> None:
    mirror()
    KnownDatabase.objects.using("sqlite").update(server="192.0.2.7:5432")
    assert check() == "failover"


def test_a_server_that_started_again_is_checked_as_restored() -> None:
    mirror()
    started = identity.read().started_at
    assert started is not None
    KnownDatabase.objects.using("sqlite").update(started_at=started - timedelta(minutes=5))
    assert check() == "restored"


def test_the_same_server_still_running_needs_no_merge() -> None:
    mirror()
    assert (check(), KnownDatabase.objects.using("sqlite").get().started_at) == (
        None,
        identity.read().started_at,
    )


def test_a_restart_writes_back_a_row_postgres_lacks_and_names_it_in_the_cause() -> None:
    mirror()
    embedded_cluster(name="lost")
    started = identity.read().started_at
    assert started is not None
    KnownDatabase.objects.using("sqlite").update(started_at=started - timedelta(minutes=5))
    remembered = identity.known()
    described = identity.described(identity.read(), remembered)
    report = reconcile_identity()
    assert (report.why, postgres_names()) == ("restored", ["lost"])
    assert restored() == [("lost", "restored")]
    assert f", restarted at {started.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" in described
