"""Clusters record the account that asked for them (KINDLER_MAX_CLUSTERS_PER_USER).

Expand only: the column has a database default (''), so instances of earlier
code keep inserting. SQLite may rebuild the table for it; the port-claim
triggers name clusters_portclaim and go first and come back after, as in 0008.
"""

from django.db import migrations, models


def drop_triggers(apps, schema_editor):
    from clusters import portclaims

    if schema_editor.connection.vendor != "sqlite":
        return

    portclaims.uninstall(schema_editor.connection)


def install_triggers(apps, schema_editor):
    from clusters import portclaims

    if schema_editor.connection.vendor != "sqlite":
        return

    portclaims.install(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ("clusters", "0010_desired_state_present"),
    ]

    operations = [
        migrations.RunPython(drop_triggers, install_triggers),
        migrations.AddField(
            model_name="cluster",
            name="created_by",
            field=models.CharField(blank=True, db_default="", default="", max_length=150),
        ),
        migrations.RunPython(install_triggers, drop_triggers),
    ]
