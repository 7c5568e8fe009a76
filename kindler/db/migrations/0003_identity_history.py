"""Which PostgreSQL a SQLite file mirrors, rows given back to PostgreSQL, run history.

The change log's position sequence and the identity row are created with
the triggers after every migrate (kindler.db.sync.journal.install_triggers),
so a flushed or restored database gets them back too.
"""

import uuid

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kindler_db", "0001_initial"),
    ]

    operations = [
        migrations.RemoveField(model_name="syncrun", name="mark"),
        migrations.AlterField(
            model_name="syncrun",
            name="kind",
            field=models.CharField(db_index=True, max_length=8),
        ),
        migrations.AlterModelOptions(name="syncrun", options={"ordering": ["-id"]}),
        migrations.AddField(
            model_name="rowchange",
            name="position",
            field=models.BigIntegerField(null=True),
        ),
        migrations.AddIndex(
            model_name="rowchange",
            index=models.Index(fields=["position"], name="kindler_db_rowchange_position"),
        ),
        migrations.CreateModel(
            name="DatabaseIdentity",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("uuid", models.UUIDField(default=uuid.uuid4, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"verbose_name_plural": "database identities"},
        ),
        migrations.CreateModel(
            name="KnownDatabase",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("database_uuid", models.UUIDField(null=True)),
                ("system_identifier", models.BigIntegerField(null=True)),
                ("database_oid", models.BigIntegerField(null=True)),
                ("position", models.BigIntegerField(default=0)),
                ("mark", models.CharField(blank=True, default="", max_length=32)),
                ("seen_at", models.DateTimeField(null=True)),
            ],
        ),
        migrations.CreateModel(
            name="RestoredRow",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("model", models.CharField(max_length=100)),
                ("row_uid", models.CharField(db_index=True, max_length=36)),
                ("name", models.CharField(blank=True, default="", max_length=100)),
                (
                    "why",
                    models.CharField(
                        choices=[
                            ("adopted", "adopted (new database)"),
                            ("restored", "restored (PostgreSQL lacked it)"),
                        ],
                        max_length=8,
                    ),
                ),
                ("instance_id", models.UUIDField()),
                ("restored_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ["-restored_at", "-id"]},
        ),
    ]
