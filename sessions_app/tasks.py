"""Background work on sessions (task names end in _task; they take ids)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import structlog
from asgiref.sync import async_to_sync
from celery import shared_task
from django.core.files.base import ContentFile
from django.dispatch import receiver
from django.utils import timezone

from sessions_app import actions, journal, realtime, retention, transcripts
from sessions_app.models import VoiceSession
from sessions_app.signals import session_ended
from voiceplatform.celery import enqueue

log = structlog.get_logger(__name__)


@shared_task
def expire_sessions_task() -> int:
    """Periodic: ends sessions that outlived SESSION_MAX_SECONDS or never connected,
    and exports the transcripts whose export could not be queued when they ended."""
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


@shared_task
def apply_retention_task() -> dict[str, int]:
    """Periodic: transcripts, tool outputs and recordings past their retention are
    removed; each run leaves one audit event saying how many."""
    return asdict(retention.apply())


async def _expire() -> int:
    try:
        if await journal.pending():
            await journal.replay()
        return await actions.expire_overdue_sessions()
    finally:
        await realtime.close_client()  # this event loop ends with the call


@shared_task
def export_transcript_task(session_id: str) -> None:
    """Stores the session's transcript (JSON and plain text) in the default storage."""
    session = VoiceSession.objects.get(pk=session_id)
    if not session.is_live:
        transcripts.redact_call_arguments(session_id)
    as_json, as_text = transcripts.export(list(session.items.all()))
    session.transcript_json.save(f"{session_id}.json", ContentFile(as_json.encode()), save=False)
    session.transcript_text.save(f"{session_id}.txt", ContentFile(as_text.encode()), save=False)
    session.save(update_fields=["transcript_json", "transcript_text", "updated_at"])


@receiver(session_ended)
async def queue_transcript_export(sender, *, session_id: str, **kwargs) -> None:
    """Queues the export; if that fails, the periodic sweep exports it later."""
    try:
        await enqueue(export_transcript_task, session_id)
    except Exception as exc:
        log.warning("export_not_queued", session_id=session_id, error=type(exc).__name__)
