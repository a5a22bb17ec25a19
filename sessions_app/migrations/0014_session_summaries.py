"""Post-call summaries on the session (tools_app.agents.summaries): the summary, its
outcome and topics, where it stands, and what it cost; and a GIN index for searching
summaries and topics as full text (sessions_app.search), on PostgreSQL only, built
concurrently as 0009's is (so this migration is not atomic)."""

from django.db import migrations, models

INDEX = "sessions_summary_search"
# The expression Django writes for SearchVector("summary", "topics", config="english"):
# the index serves a query only when the two match exactly.
CREATE = (
    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON sessions_app_voicesession USING gin "
    "(to_tsvector('english'::regconfig, "
    "COALESCE(summary, '') || ' ' || COALESCE((topics)::text, '')))"
)
DROP = f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("sessions_app", "0013_end_reason_staff")]

    operations = [
        migrations.AddField(
            model_name="voicesession",
            name="outcome",
            field=models.CharField(
                blank=True,
                choices=[
                    ("resolved", "Resolved"),
                    ("not_resolved", "Not resolved"),
                    ("follow_up", "Follow-up needed"),
                ],
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="summarized_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="summary",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="summary_cost_usd",
            field=models.DecimalField(decimal_places=6, default=0, max_digits=12),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="summary_input_tokens",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="summary_note",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="summary_output_tokens",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="summary_state",
            field=models.CharField(
                blank=True,
                choices=[
                    ("pending", "Pending"),
                    ("done", "Done"),
                    ("skipped", "Skipped"),
                    ("failed", "Failed"),
                ],
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="voicesession",
            name="topics",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP)),
    ]
