"""The "Support" group: staff in it read conversation history in the admin (sessions,
their items, tool runs and webhook events) and nothing else: no API keys, no tool
grants, no users, no operator views."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Support"
CAN_VIEW = [
    ("sessions_app", "voicesession"),
    ("sessions_app", "conversationitem"),
    ("sessions_app", "webhookevent"),
    ("tools_app", "toolexecution"),
]


def make_group(apps, schema_editor):
    # Permissions are made after all migrations run; this one needs them now.
    for app_label in {app for app, _ in CAN_VIEW}:
        config = apps.get_app_config(app_label)
        if getattr(config, "models_module", None) is None:  # historical apps: stubs
            config.models_module = True
        create_permissions(config, verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.set(
        Permission.objects.get(content_type__app_label=app, codename=f"view_{model}")
        for app, model in CAN_VIEW
    )


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0009_transcript_full_text_index"),
        ("tools_app", "0003_execution_origin_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(make_group, remove_group)]
