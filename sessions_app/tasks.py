"""Background work on sessions (task names end in _task; they take ids)."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from celery import shared_task
from django.core.files.base import ContentFile

from sessions_app import actions, transcripts
from sessions_app.models import VoiceSession


@shared_task
def expire_sessions_task() -> int:
    """Periodic: ends sessions that outlived SESSION_MAX_SECONDS."""
    return async_to_sync(actions.expire_overdue_sessions)()


@shared_task
def export_transcript_task(session_id: str) -> None:
    """Stores the session's transcript (JSON and plain text) in the default storage."""
    session = VoiceSession.objects.get(pk=session_id)
    as_json, as_text = transcripts.export(list(session.items.all()))
    session.transcript_json.save(f"{session_id}.json", ContentFile(as_json.encode()), save=False)
    session.transcript_text.save(f"{session_id}.txt", ContentFile(as_text.encode()), save=False)
    session.save(update_fields=["transcript_json", "transcript_text", "updated_at"])
