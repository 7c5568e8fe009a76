"""Post-operation hook results."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("clusters", "0005_placement")]

    operations: list[migrations.operations.base.Operation] = []
