"""Reconciler registry and cluster placement per Docker host."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("clusters", "0004_roles")]

    operations: list[migrations.operations.base.Operation] = []
