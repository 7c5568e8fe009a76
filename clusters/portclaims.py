"""The triggers that claim every cluster's host ports, per Docker host.

Model validation checks for a taken port with a query, which two requests
can both pass at once; and writers outside Kindler (psql, a replayed outage)
skip validation altogether. Triggers on clusters_cluster keep
clusters_portclaim in step with every write, so the unique (host, port)
refuses the second holder on one Docker host, whatever wrote it; clusters on
different hosts may use the same ports.

SQLite drops a table's triggers when a migration rebuilds it (most
AddField, AlterField and RemoveField operations on clusters_cluster do), so
install() runs after every migrate as well (ClustersConfig.ready connects
it to post_migrate); it is idempotent.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction

TABLE = "clusters_cluster"
CLAIMS = "clusters_portclaim"
# The host ports a cluster binds, in the order a backfill keeps their claims.
PORTS = ("http_port", "https_port", "pf_port")
WATCHED = ", ".join(("uid", "host", *PORTS))
TRIGGERS = ("clusters_portclaim_insert", "clusters_portclaim_update", "clusters_portclaim_delete")

POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION clusters_portclaim_sync() RETURNS trigger AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    DELETE FROM {CLAIMS} WHERE cluster_uid = OLD.uid;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    -- In port order, so two writers claiming the same ports wait on each
    -- other instead of deadlocking.
    INSERT INTO {CLAIMS} (host, port, cluster_uid, field)
    SELECT NEW.host, claim.port, NEW.uid, claim.field
    FROM (VALUES {", ".join(f"(NEW.{port}, '{port}')" for port in PORTS)}) AS claim (port, field)
    WHERE claim.port IS NOT NULL
    ORDER BY claim.port;
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

POSTGRES_CHANGED = " OR ".join(
    f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in ("uid", "host", *PORTS)
)

POSTGRES_INSTALL = [
    POSTGRES_FUNCTION,
    *(f"DROP TRIGGER IF EXISTS {name} ON {TABLE}" for name in TRIGGERS),
    f"CREATE TRIGGER clusters_portclaim_insert AFTER INSERT ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION clusters_portclaim_sync()",
    # Only when a port or the host changes: state bookkeeping saves leave the claims alone.
    f"CREATE TRIGGER clusters_portclaim_update AFTER UPDATE OF {WATCHED} ON {TABLE} "
    f"FOR EACH ROW WHEN ({POSTGRES_CHANGED}) EXECUTE FUNCTION clusters_portclaim_sync()",
    f"CREATE TRIGGER clusters_portclaim_delete AFTER DELETE ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION clusters_portclaim_sync()",
    f"""
    INSERT INTO {CLAIMS} (host, port, cluster_uid, field)
    SELECT cluster.host, claim.port, cluster.uid, claim.field
    FROM {TABLE} AS cluster CROSS JOIN LATERAL (
      VALUES {", ".join(f"(cluster.{port}, '{port}', {rank})" for rank, port in enumerate(PORTS))}
    ) AS claim (port, field, rank)
    WHERE claim.port IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM {CLAIMS} AS held WHERE held.cluster_uid = cluster.uid)
    ORDER BY cluster.id, claim.rank
    ON CONFLICT (host, port) DO NOTHING
    """,
]

POSTGRES_UNINSTALL = [
    *(f"DROP TRIGGER IF EXISTS {name} ON {TABLE}" for name in TRIGGERS),
    "DROP FUNCTION IF EXISTS clusters_portclaim_sync()",
]

# An outer INSERT OR REPLACE / OR IGNORE overrides the conflict handling of
# the statements inside a trigger, which would let the claim below steal or
# skip a port; RAISE is not overridden, so check explicitly first.
SQLITE_REFUSE = (
    f"SELECT RAISE(ABORT, 'UNIQUE constraint failed: {CLAIMS}.host, {CLAIMS}.port') "
    f"WHERE EXISTS (SELECT 1 FROM {CLAIMS} "
    f"WHERE host = NEW.host AND port IN ({', '.join(f'NEW.{port}' for port in PORTS)}) "
    "AND cluster_uid IS NOT NEW.uid);"
)
SQLITE_CLAIM = " ".join(
    f"INSERT INTO {CLAIMS} (host, port, cluster_uid, field) "
    f"SELECT NEW.host, NEW.{port}, NEW.uid, '{port}' WHERE NEW.{port} IS NOT NULL;"
    for port in PORTS
)
SQLITE_RELEASE = f"DELETE FROM {CLAIMS} WHERE cluster_uid = OLD.uid;"
SQLITE_CHANGED = " OR ".join(
    f"OLD.{column} IS NOT NEW.{column}" for column in ("uid", "host", *PORTS)
)

SQLITE_INSTALL = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS),
    f"CREATE TRIGGER clusters_portclaim_insert AFTER INSERT ON {TABLE} "
    f"BEGIN {SQLITE_REFUSE} {SQLITE_CLAIM} END",
    f"CREATE TRIGGER clusters_portclaim_update AFTER UPDATE OF {WATCHED} ON {TABLE} "
    f"WHEN {SQLITE_CHANGED} BEGIN {SQLITE_RELEASE} {SQLITE_REFUSE} {SQLITE_CLAIM} END",
    f"CREATE TRIGGER clusters_portclaim_delete AFTER DELETE ON {TABLE} BEGIN {SQLITE_RELEASE} END",
    f"""
    INSERT OR IGNORE INTO {CLAIMS} (host, port, cluster_uid, field)
    SELECT host, port, uid, field FROM (
      {
        " UNION ALL ".join(
            f"SELECT id, {rank} AS rank, host, {port} AS port, uid, '{port}' AS field FROM {TABLE}"
            for rank, port in enumerate(PORTS)
        )
    }
    ) AS claim
    WHERE port IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM {CLAIMS} AS held WHERE held.cluster_uid = claim.uid)
    ORDER BY id, rank
    """,
]

SQLITE_UNINSTALL = [f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS]

STATEMENTS = {
    "postgresql": (POSTGRES_INSTALL, POSTGRES_UNINSTALL),
    "sqlite": (SQLITE_INSTALL, SQLITE_UNINSTALL),
}


def install(connection: Any) -> None:
    """Create the claim triggers and claim the ports of clusters that hold none yet.

    Rows that already share a port on one host keep it: the oldest cluster
    gets the claim, the others are left for a person to move (model
    validation reports them on their next save).
    """
    with connection.cursor() as cursor:
        for sql in STATEMENTS[connection.vendor][0]:
            cursor.execute(sql)


def uninstall(connection: Any) -> None:
    """Drop the claim triggers."""
    with connection.cursor() as cursor:
        for sql in STATEMENTS[connection.vendor][1]:
            cursor.execute(sql)


def installable(connection: Any) -> bool:
    """Return True when both tables exist with the host columns the triggers use."""
    introspection = connection.introspection
    with connection.cursor() as cursor:
        if not {TABLE, CLAIMS} <= set(introspection.table_names(cursor)):
            return False
        for table in (TABLE, CLAIMS):
            columns = {c.name for c in introspection.get_table_description(cursor, table)}
            if "host" not in columns:
                return False
    return True


def on_post_migrate(sender: Any, using: str = "", **kwargs: Any) -> None:
    """Reinstall the triggers after every migrate: a table rebuild may have dropped them."""
    if sender.label != "clusters" or using not in connections:
        return
    connection = connections[using]
    if connection.vendor in STATEMENTS and installable(connection):
        with transaction.atomic(using=using):
            install(connection)
