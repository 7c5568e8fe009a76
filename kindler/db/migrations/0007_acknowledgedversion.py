"""Each instance keeps the versions it acknowledged, so a merge can tell a lost one (SQLite)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('kindler_db', '0006_journalentry_schema'),
    ]

    operations = [
        migrations.CreateModel(
            name='AcknowledgedVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('model', models.CharField(max_length=100)),
                ('uid', models.CharField(max_length=36)),
                ('version', models.BigIntegerField()),
                ('digest', models.CharField(blank=True, max_length=64)),
                ('changed', models.TextField(blank=True)),
                ('acknowledged_at', models.CharField(db_index=True, max_length=32)),
            ],
            options={
                'indexes': [models.Index(fields=['model', 'uid'], name='kindler_db_ack_row')],
            },
        ),
    ]
