"""Webhook ids kept whole (deduplicated by their hash), when the server first held a
call's sideband, and the network per-address limits count."""

import hashlib

from django.db import migrations, models


def hash_existing_ids(apps, schema_editor):
    WebhookEvent = apps.get_model("sessions_app", "WebhookEvent")
    for event in WebhookEvent.objects.only("pk", "webhook_id").iterator():
        key = hashlib.sha256(event.webhook_id.encode("utf-8", "surrogatepass")).hexdigest()
        WebhookEvent.objects.filter(pk=event.pk).update(webhook_key=key)


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0005_vocabulary_choices")]

    operations = [
        migrations.AlterField(
            model_name="webhookevent", name="webhook_id", field=models.TextField()
        ),
        migrations.AddField(
            model_name="webhookevent",
            name="webhook_key",
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.RunPython(hash_existing_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="webhookevent",
            name="webhook_key",
            field=models.CharField(max_length=64, unique=True),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="sideband_seen_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="client_network",
            field=models.CharField(blank=True, db_index=True, max_length=64),
        ),
    ]
