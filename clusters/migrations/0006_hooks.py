"""Post-operation hook results, and plainer labels for the desired states.

Adding a nullable column without a default is an ALTER TABLE ADD COLUMN on
SQLite, not a table rebuild: the journal and guard triggers of
clusters_operationlog stay (and are reinstalled after every migrate anyway).
The new labels change no column.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("clusters", "0005_placement")]

    operations = [
        migrations.AddField(
            model_name="operationlog",
            name="hooks",
            field=models.TextField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="cluster",
            name="desired_state",
            field=models.CharField(
                choices=[("present", "running"), ("stopped", "stopped"), ("absent", "absent")],
                default="present",
                max_length=16,
            ),
        ),
    ]
