"""Viewer and Operator roles.

Viewers see everything and change nothing; Operators add, change, delete,
start and stop clusters and resolve sync conflicts. Permissions are normally
made after migrate (post_migrate), too late for this migration: they are
made here first, from the historical models, so the groups get them on a
fresh database too. The permission names are written out here: a migration
keeps meaning what it meant when it ran.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLES = {
    "Viewers": [
        ("clusters", "view_cluster"),
        ("clusters", "view_operationlog"),
        ("kindler_db", "view_conflict"),
    ],
    "Operators": [
        ("clusters", "view_cluster"),
        ("clusters", "add_cluster"),
        ("clusters", "change_cluster"),
        ("clusters", "delete_cluster"),
        ("clusters", "operate_cluster"),
        ("clusters", "view_operationlog"),
        ("kindler_db", "view_conflict"),
        ("kindler_db", "change_conflict"),
    ],
}


def make_permissions(apps, schema_editor):
    for app_config in apps.get_app_configs():
        # create_permissions skips an app without a models module; the
        # historical app configs never have one.
        app_config.models_module = True
        create_permissions(
            app_config, verbosity=0, using=schema_editor.connection.alias, apps=apps
        )
        app_config.models_module = None


def add_roles(apps, schema_editor):
    make_permissions(apps, schema_editor)
    alias = schema_editor.connection.alias
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.using(alias).get_or_create(name=name)
        wanted = [
            Permission.objects.using(alias).get(
                content_type__app_label=app_label, codename=codename
            )
            for app_label, codename in codenames
        ]
        group.permissions.add(*wanted)


def remove_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("clusters", "0003_portclaim"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("kindler_db", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="cluster",
            options={
                "ordering": ["name"],
                "permissions": [("operate_cluster", "Can start and stop cluster")],
            },
        ),
        migrations.RunPython(add_roles, remove_roles),
    ]
