"""deploy/scripts/backup-postgres.sh and restore-postgres.sh against the test PostgreSQL:
what was recorded (sessions, transcripts, audit events) is all there in a fresh database
restored from the dump."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import psycopg
import pytest
from django.db import connection

from ops_app import audit
from ops_app.models import AuditEvent
from tests.deploy.support import DEPLOY
from tests.factories import ConversationItemFactory, VoiceSessionFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (shutil.which("pg_dump") and shutil.which("pg_restore") and shutil.which("psql")),
        reason="PostgreSQL's client programs are not installed (scripts/services.sh installs them)",
    ),
]

SCRIPTS = DEPLOY / "scripts"


def url(settings_dict: dict, name: str | None = None) -> str:
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    return (
        f"postgres://{settings_dict['USER']}{password}@{settings_dict['HOST']}:"
        f"{settings_dict['PORT'] or 5432}/{name or settings_dict['NAME']}"
    )


def run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def fresh_database():
    """An empty database beside the test one, dropped afterwards."""
    admin = url(connection.settings_dict, "postgres")
    name = f"vp_restore_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url(connection.settings_dict, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_backup_restores_every_session_transcript_and_audit_event(tmp_path, fresh_database):
    session = VoiceSessionFactory(status="ended")
    items = [ConversationItemFactory(session=session, text=f"line {n}") for n in range(3)]
    event = audit.record(AuditEvent.Action.MAINTENANCE_ON, actor_name="cli:ops", target="all")

    backup = run("backup-postgres.sh", str(tmp_path), DATABASE_URL=url(connection.settings_dict))
    assert backup.returncode == 0, backup.stderr
    dump = backup.stdout.strip()
    assert dump.startswith(str(tmp_path)) and dump.endswith(".dump")

    restore = run("restore-postgres.sh", dump, TARGET_DATABASE_URL=fresh_database)
    assert restore.returncode == 0, restore.stderr
    with psycopg.connect(fresh_database) as conn:
        restored_session = conn.execute(
            "SELECT status FROM sessions_app_voicesession WHERE id = %s", (session.pk,)
        ).fetchone()
        restored_items = conn.execute(
            "SELECT text FROM sessions_app_conversationitem WHERE session_id = %s ORDER BY text",
            (session.pk,),
        ).fetchall()
        restored_event = conn.execute(
            "SELECT action, actor_name, target FROM ops_app_auditevent WHERE id = %s", (event.pk,)
        ).fetchone()
        # The audit log stays append-only after a restore: its trigger came back too.
        with pytest.raises(psycopg.Error):
            conn.execute("DELETE FROM ops_app_auditevent")

    assert restored_session == ("ended",)
    assert [text for (text,) in restored_items] == sorted(item.text for item in items)
    assert restored_event == ("maintenance_on", "cli:ops", "all")
    assert "sessions 1" in restore.stdout and "audit_events 1" in restore.stdout


def test_a_restore_refuses_a_database_that_already_has_the_apps_tables(tmp_path):
    backup = run("backup-postgres.sh", str(tmp_path), DATABASE_URL=url(connection.settings_dict))

    restore = run(
        "restore-postgres.sh",
        backup.stdout.strip(),
        TARGET_DATABASE_URL=url(connection.settings_dict),
    )

    assert restore.returncode == 1 and "refusing" in restore.stderr


def test_a_backup_without_a_database_url_says_what_is_missing(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("DATABASE_URL")}

    result = subprocess.run(
        ["bash", str(SCRIPTS / "backup-postgres.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode != 0 and "DATABASE_URL" in result.stderr
    assert not list(tmp_path.iterdir())
