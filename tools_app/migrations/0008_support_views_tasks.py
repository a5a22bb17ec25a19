"""The "Support" group (sessions_app 0010) reads tasks too, as it reads tool runs: the
session page shows them in place and the task list is theirs to search."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Support"


def add_view_task(apps, schema_editor):
    # Permissions are made after all migrations run; this one needs view_task now.
    config = apps.get_app_config("tools_app")
    if getattr(config, "models_module", None) is None:  # historical apps: stubs
        config.models_module = True
    create_permissions(config, verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view_task = Permission.objects.get(content_type__app_label="tools_app", codename="view_task")
    for group in Group.objects.filter(name=GROUP):
        group.permissions.add(view_task)


def remove_view_task(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view_task = Permission.objects.filter(
        content_type__app_label="tools_app", codename="view_task"
    ).first()
    if view_task is not None:
        for group in Group.objects.filter(name=GROUP):
            group.permissions.remove(view_task)


class Migration(migrations.Migration):
    dependencies = [
        ("tools_app", "0007_task_cancel_permission"),
        ("sessions_app", "0010_support_group"),
    ]

    operations = [migrations.RunPython(add_view_task, remove_view_task)]
