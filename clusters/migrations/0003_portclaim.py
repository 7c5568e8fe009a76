"""Claim every host port in a table with a unique port, kept by triggers.

Model validation checks for a taken port with a query, which two requests
can both pass at once; and writers outside Kindler (psql, a replayed outage)
skip validation altogether. Triggers on clusters_cluster keep
clusters_portclaim in step with every write, so the unique port refuses the
second holder whatever wrote it.

The columns are written out here, not read from the model: a migration
keeps meaning what it meant when it ran.

SQLite: a migration that rebuilds clusters_cluster (most AlterField and
RemoveField operations do) drops these triggers with the old table, and must
create them again.
"""

from django.db import migrations, models

TABLE = "clusters_cluster"
CLAIMS = "clusters_portclaim"
# The host ports a cluster binds, in the order a backfill keeps their claims.
PORTS = ("http_port", "https_port", "pf_port")
WATCHED = ", ".join(("uid", *PORTS))

POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION clusters_portclaim_sync() RETURNS trigger AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    DELETE FROM {CLAIMS} WHERE cluster_uid = OLD.uid;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    -- In port order, so two writers claiming the same ports wait on each
    -- other instead of deadlocking.
    INSERT INTO {CLAIMS} (port, cluster_uid, field)
    SELECT claim.port, NEW.uid, claim.field
    FROM (VALUES {", ".join(f"(NEW.{port}, '{port}')" for port in PORTS)}) AS claim (port, field)
    WHERE claim.port IS NOT NULL
    ORDER BY claim.port;
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

POSTGRES_CHANGED = " OR ".join(
    f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in ("uid", *PORTS)
)

POSTGRES_INSTALL = [
    POSTGRES_FUNCTION,
    f"CREATE TRIGGER clusters_portclaim_insert AFTER INSERT ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION clusters_portclaim_sync()",
    # Only when a port changes: state bookkeeping saves leave the claims alone.
    f"CREATE TRIGGER clusters_portclaim_update AFTER UPDATE OF {WATCHED} ON {TABLE} "
    f"FOR EACH ROW WHEN ({POSTGRES_CHANGED}) EXECUTE FUNCTION clusters_portclaim_sync()",
    f"CREATE TRIGGER clusters_portclaim_delete AFTER DELETE ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION clusters_portclaim_sync()",
    f"""
    INSERT INTO {CLAIMS} (port, cluster_uid, field)
    SELECT claim.port, cluster.uid, claim.field
    FROM {TABLE} AS cluster CROSS JOIN LATERAL (
      VALUES {", ".join(f"(cluster.{port}, '{port}', {rank})" for rank, port in enumerate(PORTS))}
    ) AS claim (port, field, rank)
    WHERE claim.port IS NOT NULL
    ORDER BY cluster.id, claim.rank
    ON CONFLICT (port) DO NOTHING
    """,
]

POSTGRES_UNINSTALL = [
    f"DROP TRIGGER IF EXISTS clusters_portclaim_insert ON {TABLE}",
    f"DROP TRIGGER IF EXISTS clusters_portclaim_update ON {TABLE}",
    f"DROP TRIGGER IF EXISTS clusters_portclaim_delete ON {TABLE}",
    "DROP FUNCTION IF EXISTS clusters_portclaim_sync()",
]

# An outer INSERT OR REPLACE / OR IGNORE overrides the conflict handling of
# the statements inside a trigger, which would let the claim below steal or
# skip a port; RAISE is not overridden, so check explicitly first.
SQLITE_REFUSE = (
    f"SELECT RAISE(ABORT, 'UNIQUE constraint failed: {CLAIMS}.port') "
    f"WHERE EXISTS (SELECT 1 FROM {CLAIMS} "
    f"WHERE port IN ({', '.join(f'NEW.{port}' for port in PORTS)}) "
    "AND cluster_uid IS NOT NEW.uid);"
)
SQLITE_CLAIM = " ".join(
    f"INSERT INTO {CLAIMS} (port, cluster_uid, field) "
    f"SELECT NEW.{port}, NEW.uid, '{port}' WHERE NEW.{port} IS NOT NULL;"
    for port in PORTS
)
SQLITE_RELEASE = f"DELETE FROM {CLAIMS} WHERE cluster_uid = OLD.uid;"
SQLITE_CHANGED = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in ("uid", *PORTS))

SQLITE_INSTALL = [
    f"CREATE TRIGGER clusters_portclaim_insert AFTER INSERT ON {TABLE} "
    f"BEGIN {SQLITE_REFUSE} {SQLITE_CLAIM} END",
    f"CREATE TRIGGER clusters_portclaim_update AFTER UPDATE OF {WATCHED} ON {TABLE} "
    f"WHEN {SQLITE_CHANGED} BEGIN {SQLITE_RELEASE} {SQLITE_REFUSE} {SQLITE_CLAIM} END",
    f"CREATE TRIGGER clusters_portclaim_delete AFTER DELETE ON {TABLE} BEGIN {SQLITE_RELEASE} END",
    f"""
    INSERT OR IGNORE INTO {CLAIMS} (port, cluster_uid, field)
    SELECT port, uid, field FROM (
      {" UNION ALL ".join(
          f"SELECT id, {rank} AS rank, {port} AS port, uid, '{port}' AS field FROM {TABLE}"
          for rank, port in enumerate(PORTS)
      )}
    )
    WHERE port IS NOT NULL
    ORDER BY id, rank
    """,
]

SQLITE_UNINSTALL = [
    "DROP TRIGGER IF EXISTS clusters_portclaim_insert",
    "DROP TRIGGER IF EXISTS clusters_portclaim_update",
    "DROP TRIGGER IF EXISTS clusters_portclaim_delete",
]

STATEMENTS = {
    "postgresql": (POSTGRES_INSTALL, POSTGRES_UNINSTALL),
    "sqlite": (SQLITE_INSTALL, SQLITE_UNINSTALL),
}


def install(apps, schema_editor):
    """Create the claim triggers and claim the ports existing clusters hold.

    Existing rows that already share a port keep it: the oldest cluster gets
    the claim, the others are left for a person to move (model validation
    reports them on their next save).
    """
    for sql in STATEMENTS[schema_editor.connection.vendor][0]:
        schema_editor.execute(sql, params=None)


def uninstall(apps, schema_editor):
    """Drop the claim triggers (the table goes with the model)."""
    for sql in STATEMENTS[schema_editor.connection.vendor][1]:
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("clusters", "0002_desired_stopped"),
    ]

    operations = [
        migrations.CreateModel(
            name="PortClaim",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("port", models.PositiveIntegerField(unique=True)),
                ("cluster_uid", models.UUIDField(db_index=True)),
                ("field", models.CharField(max_length=16)),
            ],
            options={
                "ordering": ["port"],
            },
        ),
        migrations.RunPython(install, uninstall),
    ]
