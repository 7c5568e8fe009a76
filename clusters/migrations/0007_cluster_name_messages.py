"""The cluster name's field as the model declares it (no change to the database)."""

import clusters.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("clusters", "0006_hooks"),
    ]

    operations = [
        migrations.AlterField(
            model_name="cluster",
            name="name",
            field=models.CharField(
                max_length=63, unique=True, validators=[clusters.validators.validate_dns_label]
            ),
        ),
    ]
