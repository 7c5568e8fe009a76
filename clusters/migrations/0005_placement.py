"""Reconciler registry and cluster placement per Docker host.

Existing clusters are placed on KINDLER_DEFAULT_HOST when it is set; else
they are left unplaced (host ""), and the first reconciler that runs adopts
them: the machine that migrates (a web container, say) may not be the one
with Docker. Port claims become per host: the old triggers go, the claims
are rebuilt with each cluster's host.
"""

from django.db import migrations, models

import clusters.models
import clusters.validators


def drop_triggers(apps, schema_editor):
    """Drop the port-claim triggers and the claims: they are rebuilt per host below."""
    from clusters import portclaims

    portclaims.uninstall(schema_editor.connection)
    schema_editor.execute(f"DELETE FROM {portclaims.CLAIMS}", params=None)


def place_existing(apps, schema_editor):
    """Put the clusters that exist on KINDLER_DEFAULT_HOST, when it is set."""
    from django.conf import settings

    if settings.KINDLER_DEFAULT_HOST:
        Cluster = apps.get_model("clusters", "Cluster")
        Cluster.objects.using(schema_editor.connection.alias).update(
            host=settings.KINDLER_DEFAULT_HOST
        )


def install_triggers(apps, schema_editor):
    """Create the per-host claim triggers and claim existing clusters' ports."""
    from clusters import portclaims

    portclaims.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("clusters", "0004_roles")]

    operations = [
        migrations.RunPython(drop_triggers, migrations.RunPython.noop),
        migrations.AddField(
            model_name="cluster",
            name="host",
            field=models.CharField(db_index=True, default="", max_length=253),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="cluster",
            name="host",
            field=models.CharField(
                db_index=True,
                default=clusters.models.default_host,
                max_length=253,
                validators=[clusters.validators.validate_host_name],
            ),
        ),
        migrations.RunPython(place_existing, migrations.RunPython.noop),
        migrations.AddField(
            model_name="portclaim",
            name="host",
            field=models.CharField(default="", max_length=253),
        ),
        migrations.AlterField(
            model_name="portclaim",
            name="port",
            field=models.PositiveIntegerField(),
        ),
        migrations.AlterModelOptions(
            name="portclaim",
            options={"ordering": ["host", "port"]},
        ),
        migrations.AddConstraint(
            model_name="portclaim",
            constraint=models.UniqueConstraint(
                fields=("host", "port"), name="clusters_portclaim_host_port"
            ),
        ),
        migrations.CreateModel(
            name="Registration",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.UUIDField(unique=True)),
                ("host", models.CharField(db_index=True, max_length=253)),
                ("pid", models.PositiveIntegerField()),
                ("version", models.CharField(max_length=32)),
                ("providers", models.JSONField(default=dict)),
                ("started_at", models.DateTimeField()),
                ("last_seen", models.DateTimeField(db_index=True)),
                ("observed", models.JSONField(default=dict)),
                ("observed_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"ordering": ["host", "started_at"]},
        ),
        migrations.RunPython(install_triggers, drop_triggers),
    ]
