"""A failover or restore never undoes a delete: tombstones on SQLite, timelines remembered."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kindler_db", "0003_identity_history"),
    ]

    operations = [
        migrations.AddField(
            model_name="knowndatabase",
            name="server",
            field=models.CharField(blank=True, db_default="", default="", max_length=100),
        ),
        migrations.AddField(
            model_name="knowndatabase",
            name="timeline",
            field=models.BigIntegerField(null=True),
        ),
        migrations.AlterField(
            model_name="restoredrow",
            name="why",
            field=models.CharField(
                choices=[
                    ("adopted", "adopted (new database)"),
                    ("restored", "restored (PostgreSQL lacked it)"),
                    ("failover", "failover (the new primary lacked it)"),
                    ("deleted", "delete applied again (PostgreSQL had the row back)"),
                ],
                max_length=8,
            ),
        ),
        migrations.CreateModel(
            name="Tombstone",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("model", models.CharField(max_length=100)),
                ("uid", models.CharField(max_length=36)),
                ("version", models.BigIntegerField()),
                ("deleted_at", models.CharField(db_index=True, max_length=32)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("model", "uid"), name="kindler_db_tombstone_once"
                    )
                ],
            },
        ),
    ]
