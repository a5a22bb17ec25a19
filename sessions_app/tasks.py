"""Background work on sessions (task names end in _task; they take ids)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import structlog
from amplifier_core import LLMError
from asgiref.sync import async_to_sync, sync_to_async
from celery import shared_task
from celery.exceptions import Retry
from django.conf import settings
from django.core.files.base import ContentFile
from django.dispatch import receiver
from django.utils import timezone

from sessions_app import actions, journal, realtime, retention, transcripts
from sessions_app.models import VoiceSession
from sessions_app.signals import session_ended
from tools_app.agents import summaries
from voiceplatform.celery import enqueue, enqueue_detached

log = structlog.get_logger(__name__)


@shared_task
def expire_sessions_task() -> int:
    """Periodic: ends sessions that outlived SESSION_MAX_SECONDS or never connected,
    and exports the transcripts (and queues the summaries) that could not be queued
    when their sessions ended."""
    expired = async_to_sync(_expire)()
    ended = VoiceSession.objects.filter(
        ended_at__gte=timezone.now() - timedelta(days=1),
        ended_at__lt=timezone.now() - timedelta(minutes=1),
    )
    for session_id in ended.filter(transcript_json="").values_list("pk", flat=True):
        export_transcript_task.delay(session_id)
    if settings.SUMMARY_ENABLED:
        for session_id in ended.filter(summary_state="").values_list("pk", flat=True):
            summarize_session_task.delay(session_id)
            summaries.mark_queued(session_id)
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


@shared_task(bind=True)
def summarize_session_task(self, session_id: str, force: bool = False) -> str | Retry:
    """Writes an ended session's summary (tools_app.agents.summaries), again with force;
    returns the state it reached. A failing or unusable model (the provider turns every
    upstream error into an LLM error) is tried again up to SUMMARY_MAX_RETRIES times,
    each wait twice the last (in process, at once); after that, or at once when another
    try cannot help (a refused key or request), the summary is marked failed. How the
    session ended is never touched."""
    try:
        return summaries.summarize(session_id, force=force)
    except LLMError as exc:
        error = f"{type(exc).__name__}: {exc}"
        tries = self.request.retries + 1
        if summaries.retryable(exc) and tries <= settings.SUMMARY_MAX_RETRIES:
            wait = summaries.retry_after(exc, tries - 1)
            summaries.mark(
                session_id,
                VoiceSession.SummaryState.PENDING,
                f"Try {tries} failed: {error} Trying again in {wait:g} s.",
            )
            log.warning("summary_retrying", session_id=session_id, error=error, wait=wait)
            retry = self.retry(
                countdown=wait, max_retries=settings.SUMMARY_MAX_RETRIES, throw=False
            )
            if self.request.is_eager:
                # In process, Celery's apply() runs the next try at once when handed this
                # (raising it would escape, as eager tasks' exceptions do here).
                return retry
            raise retry from None
        note = f"Failed after {tries} {'try' if tries == 1 else 'tries'}: {error}"
    except Exception as exc:  # never a crash that leaves it pending: failed, and why
        log.exception("summary_crashed", session_id=session_id)
        note = f"Failed: {type(exc).__name__}."
    summaries.mark(session_id, VoiceSession.SummaryState.FAILED, note)
    log.warning("summary_failed", session_id=session_id, note=note)
    return VoiceSession.SummaryState.FAILED


@receiver(session_ended)
async def queue_summary(sender, *, session_id: str, **kwargs) -> None:
    """Queues the call's summary when summaries are on. It never holds the end up (in
    process, it runs after the end has answered) nor fails it; one that could not be
    queued is left to the periodic sweep."""
    if not settings.SUMMARY_ENABLED:
        return
    try:
        await enqueue_detached(summarize_session_task, session_id)
        await sync_to_async(summaries.mark_queued)(session_id)
    except Exception as exc:  # left blank: the sweep queues it
        log.warning("summary_not_queued", session_id=session_id, error=type(exc).__name__)
