"""Journal entries say which code version wrote them; earlier code's entries read ''."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('kindler_db', '0005_knowndatabase_started_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='journalentry',
            name='schema',
            field=models.CharField(blank=True, db_default='', default='', max_length=32),
        ),
    ]
