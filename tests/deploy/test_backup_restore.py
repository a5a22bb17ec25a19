"""deploy/scripts/backup-postgres.sh and restore-postgres.sh against the test PostgreSQL:
what was recorded (sessions, transcripts, audit events) is all there in a fresh database
restored from the dump."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from ops_app import audit
from ops_app.models import AuditEvent
from tests.deploy.support import DEPLOY, ROOT
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


def _job_env(tmp_path) -> dict[str, str]:
    """What the backup CronJob and the drill run with: the app's settings, dumps kept in
    a directory (BACKUP_DIR) standing in for the bucket, the venv's python first."""
    return {
        "DATABASE_URL": url(connection.settings_dict),
        "BACKUP_DIR": str(tmp_path / "bucket"),
        "VAR_DIR": str(tmp_path / "var"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


def run_in_app(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPTS / script)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def _drill_databases() -> set[str]:
    with psycopg.connect(url(connection.settings_dict, "postgres")) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'voice_drill_%'")
        return {name for (name,) in rows}


def test_the_restore_drill_restores_the_newest_backup_and_finds_every_row(tmp_path):
    # Given a day's backup job run, with sessions, transcripts and audit events recorded.
    session = VoiceSessionFactory(status="ended")
    for n in range(3):
        ConversationItemFactory(session=session, text=f"line {n}")
    audit.record(AuditEvent.Action.MAINTENANCE_ON, actor_name="cli:ops", target="all")
    env = _job_env(tmp_path)
    job = run_in_app("backup-job.sh", env)
    assert job.returncode == 0, job.stderr
    before = _drill_databases()

    # When the drill runs.
    drill = run_in_app("restore-drill.sh", env)

    # Then the newest dump was restored into a scratch database, counted, and dropped.
    assert drill.returncode == 0, drill.stderr
    assert "row counts match" in drill.stdout
    assert "sessions 1" in drill.stdout and "transcript_items 3" in drill.stdout
    assert "audit_events 1" in drill.stdout
    assert _drill_databases() == before


def test_the_drill_fails_when_the_restored_rows_differ_from_the_backups(tmp_path):
    VoiceSessionFactory(status="ended")
    env = _job_env(tmp_path)
    assert run_in_app("backup-job.sh", env).returncode == 0
    (counts,) = (tmp_path / "bucket").glob("*.counts")
    counts.write_text(counts.read_text().replace("sessions 1", "sessions 2"))

    drill = run_in_app("restore-drill.sh", env)

    assert drill.returncode == 1 and "row counts differ" in drill.stderr


def test_the_backup_job_keeps_thirty_days_and_never_deletes_the_newest(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    old = timezone.now() - timedelta(days=31)
    recent = timezone.now() - timedelta(days=29)
    for when in (old, recent):
        for suffix in ("dump", "counts"):
            (bucket / f"voiceplatform-{when:%Y%m%dT%H%M%SZ}.{suffix}").write_text("x")

    job = run_in_app("backup-job.sh", _job_env(tmp_path))

    assert job.returncode == 0, job.stderr
    kept = sorted(path.name for path in bucket.iterdir())
    assert len(kept) == 4
    assert f"voiceplatform-{recent:%Y%m%dT%H%M%SZ}.dump" in kept
    assert not [name for name in kept if f"{old:%Y%m%dT%H%M%SZ}" in name]
