"""The SQLite file remembers when its PostgreSQL server started: a restart may have lost commits."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kindler_db", "0004_failover_tombstones"),
    ]

    operations = [
        migrations.AddField(
            model_name="knowndatabase",
            name="started_at",
            field=models.DateTimeField(null=True),
        ),
    ]
