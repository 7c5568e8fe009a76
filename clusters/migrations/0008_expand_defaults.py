"""Database defaults for the host columns, so instances of earlier code keep inserting.

0005 added clusters_cluster.host and clusters_portclaim.host NOT NULL with no
default in the database: code from before that migration inserts rows
without them and PostgreSQL refuses every one. With DEFAULT '' such a cluster
is unplaced, and the first reconciler that runs adopts it, as 0005 does for
clusters that existed then. Expand first: nothing is dropped or tightened.

SQLite rebuilds both tables for this; the port-claim triggers on
clusters_cluster name clusters_portclaim, and SQLite refuses to rename a
rebuilt table under a trigger that names it, so they go first and come back
after, as in 0005.
"""

import clusters.models
import clusters.validators
from django.db import migrations, models


def drop_triggers(apps, schema_editor):
    from clusters import portclaims

    if schema_editor.connection.vendor != "sqlite":
        return  # PostgreSQL sets a column default in place, triggers and all

    portclaims.uninstall(schema_editor.connection)


def install_triggers(apps, schema_editor):
    from clusters import portclaims

    if schema_editor.connection.vendor != "sqlite":
        return

    portclaims.install(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ('clusters', '0007_cluster_name_messages'),
    ]

    operations = [
        migrations.RunPython(drop_triggers, install_triggers),
        migrations.AlterField(
            model_name='cluster',
            name='host',
            field=models.CharField(db_default='', db_index=True, default=clusters.models.default_host, max_length=253, validators=[clusters.validators.validate_host_name]),
        ),
        migrations.AlterField(
            model_name='portclaim',
            name='host',
            field=models.CharField(db_default='', default='', max_length=253),
        ),
        migrations.RunPython(install_triggers, drop_triggers),
    ]
