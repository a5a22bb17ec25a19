"""Background work on sessions (task names end in _task; they take ids)."""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import async_to_sync
from celery import shared_task
from django.core.files.base import ContentFile
from django.utils import timezone

from sessions_app import actions, realtime, transcripts
from sessions_app.models import VoiceSession


@shared_task
def expire_sessions_task() -> int:
    """Periodic: ends sessions that outlived SESSION_MAX_SECONDS, and exports the
    transcripts whose export could not be queued when their session ended."""
    expired = async_to_sync(_expire)()
    recent = timezone.now() - timedelta(days=1)
    missing = VoiceSession.objects.filter(
        ended_at__gte=recent,
        ended_at__lt=timezone.now() - timedelta(minutes=1),
        transcript_json="",
    ).values_list("pk", flat=True)
    for session_id in missing:
        export_transcript_task.delay(session_id)
    return expired


async def _expire() -> int:
    try:
        return await actions.expire_overdue_sessions()
    finally:
        await realtime.close_client()  # this event loop ends with the call


@shared_task
def export_transcript_task(session_id: str) -> None:
    """Stores the session's transcript (JSON and plain text) in the default storage."""
    session = VoiceSession.objects.get(pk=session_id)
    as_json, as_text = transcripts.export(list(session.items.all()))
    session.transcript_json.save(f"{session_id}.json", ContentFile(as_json.encode()), save=False)
    session.transcript_text.save(f"{session_id}.txt", ContentFile(as_text.encode()), save=False)
    session.save(update_fields=["transcript_json", "transcript_text", "updated_at"])
