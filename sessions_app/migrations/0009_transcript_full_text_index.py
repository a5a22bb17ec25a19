"""A GIN index for searching transcripts as full text (sessions_app.search), on
PostgreSQL only: SQLite searches by substring. Built concurrently, so a deploy onto a
large history does not lock the table the live calls write to."""

from django.db import migrations

INDEX = "sessions_item_text_search"
# The expression Django writes for SearchVector("text", config="english"): the index
# serves a query only when the two match exactly.
CREATE = (
    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON sessions_app_conversationitem "
    "USING gin (to_tsvector('english'::regconfig, COALESCE(text, '')))"
)
DROP = f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("sessions_app", "0008_token_kinds_and_cost")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP))]
