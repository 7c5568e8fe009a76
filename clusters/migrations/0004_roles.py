"""Viewer and Operator roles."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("clusters", "0003_portclaim")]

    operations: list[migrations.operations.base.Operation] = []
