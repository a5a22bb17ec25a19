"""On PostgreSQL, audit rows refuse UPDATE and DELETE, whoever asks. (TRUNCATE, which
only the table's owner may run, stays possible: it is how a test database is reset.)"""

from django.db import migrations

CREATE = """
CREATE FUNCTION ops_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ops_audit_no_update_or_delete
    BEFORE UPDATE OR DELETE ON ops_app_auditevent
    FOR EACH ROW EXECUTE FUNCTION ops_audit_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS ops_audit_no_update_or_delete ON ops_app_auditevent;
DROP FUNCTION IF EXISTS ops_audit_append_only();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("ops_app", "0001_ops_state_and_audit_log")]

    operations = [migrations.RunPython(create, drop)]
