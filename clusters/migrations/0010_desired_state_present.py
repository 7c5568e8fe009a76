"""The desired state a cluster should exist in is shown as present, as the API and CLI say."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('clusters', '0009_scale_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='cluster',
            name='desired_state',
            field=models.CharField(choices=[('present', 'present'), ('stopped', 'stopped'), ('absent', 'absent')], default='present', max_length=16),
        ),
    ]
