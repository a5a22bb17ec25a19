"""A session names the workspace its tool calls use (its own id until now), and the
session it resumed."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0011_session_over_at_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="voicesession",
            name="workspace",
            field=models.CharField(default="", editable=False, max_length=40),
            preserve_default=False,
        ),
        # Every session so far used the workspace named after it.
        migrations.RunSQL(
            "UPDATE sessions_app_voicesession SET workspace = id",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="voicesession",
            name="workspace",
            field=models.CharField(db_index=True, editable=False, max_length=40),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="resumed_from",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="resumed_by",
                to="sessions_app.voicesession",
            ),
        ),
    ]
