"""Retention of what sessions leave behind: transcripts (their summaries and topics
with them), tool outputs and recordings go once their session has been over for
RETENTION_TRANSCRIPT_DAYS, _TOOL_OUTPUT_DAYS and _RECORDING_DAYS (0 keeps them).
Session rows and tool-run rows stay, so counts, cost, outcomes and history hold; only
their content goes. A session still live is never touched.
(Workspaces have their own, shorter, retention: tools_app.retention.)

A run works in batches of RETENTION_BATCH_SIZE rows, each its own short statement,
walking primary keys upward: memory and locks stay bounded, and a file that cannot be
deleted is skipped until the next run. Running again removes nothing more. Each run
leaves one audit event with what it removed, zeros included: the log then shows the
policy ran, not only that it once found something."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

import structlog
from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from ops_app import audit
from sessions_app.models import ConversationItem, VoiceSession
from tools_app.models import ToolExecution

log = structlog.get_logger(__name__)

TRANSCRIPT_FILES = ("transcript_json", "transcript_text")
SUMMARY_REMOVED = "Summary and topics removed with the transcript (retention)."


@dataclass
class Removed:
    transcript_items: int = 0
    transcript_files: int = 0  # sessions whose exported transcript files were deleted
    summaries: int = 0  # sessions whose summary and topics were cleared
    tool_outputs: int = 0  # tool runs whose output, error and arguments were cleared
    recordings: int = 0


def over_for(days: int) -> QuerySet[VoiceSession] | None:
    """Sessions over (not live) since more than days ago, measured from their end, or
    their start when they never recorded one; None when days is 0 (kept forever)."""
    if not days:
        return None
    cutoff = timezone.now() - timedelta(days=days)
    return (
        VoiceSession.objects.exclude(status__in=VoiceSession.LIVE_STATUSES)
        .alias(over_at=Coalesce("ended_at", "created_at"))
        .filter(over_at__lt=cutoff)
    )


def _pages(queryset: QuerySet, after=None):
    """Primary keys of queryset, a batch at a time, in ascending order."""
    size = settings.RETENTION_BATCH_SIZE
    while True:
        page = queryset.order_by("pk")
        if after is not None:
            page = page.filter(pk__gt=after)
        ids = list(page.values_list("pk", flat=True)[:size])
        if not ids:
            return
        yield ids
        after = ids[-1]


def delete_transcript_items(sessions: QuerySet[VoiceSession]) -> int:
    removed = 0
    for ids in _pages(ConversationItem.objects.filter(session__in=sessions)):
        removed += ConversationItem.objects.filter(pk__in=ids).delete()[0]
    return removed


def clear_summaries(sessions: QuerySet[VoiceSession]) -> int:
    """Clears the sessions' summaries and topics, saying so on each; the outcome and
    what the summary cost stay."""
    held = sessions.filter(~Q(summary="") | ~Q(topics=[]))
    cleared = 0
    for ids in _pages(held):
        cleared += VoiceSession.objects.filter(pk__in=ids).update(
            summary="", topics=[], summary_note=SUMMARY_REMOVED, updated_at=timezone.now()
        )
    return cleared


def clear_tool_outputs(sessions: QuerySet[VoiceSession]) -> int:
    held = ~Q(output="") | ~Q(error="") | ~Q(arguments={})
    runs = ToolExecution.objects.filter(
        held, session__in=sessions, status__in=ToolExecution.FINISHED
    )
    cleared = 0
    for ids in _pages(runs):
        cleared += ToolExecution.objects.filter(pk__in=ids).update(
            output="", error="", arguments={}, updated_at=timezone.now()
        )
    return cleared


def delete_files(sessions: QuerySet[VoiceSession], fields: tuple[str, ...]) -> int:
    """Deletes the sessions' files in fields from storage and clears the fields;
    returns for how many sessions."""
    held = Q()
    for field in fields:
        held |= ~Q(**{field: ""})
    deleted = 0
    for ids in _pages(sessions.filter(held)):
        for session in VoiceSession.objects.filter(pk__in=ids).only("pk", *fields):
            try:
                for field in fields:
                    stored = getattr(session, field)
                    if stored:
                        stored.storage.delete(stored.name)
            except Exception:  # storage away: the field stays, the next run tries again
                log.exception("retention_file_not_deleted", session_id=session.pk)
                continue
            VoiceSession.objects.filter(pk=session.pk).update(**dict.fromkeys(fields, ""))
            deleted += 1
    return deleted


def apply(actor_name: str = "system") -> Removed:
    """One retention run: removes what is past its time and records one audit event."""
    removed = Removed()
    if (sessions := over_for(settings.RETENTION_TRANSCRIPT_DAYS)) is not None:
        removed.transcript_items = delete_transcript_items(sessions)
        removed.transcript_files = delete_files(sessions, TRANSCRIPT_FILES)
        removed.summaries = clear_summaries(sessions)
    if (sessions := over_for(settings.RETENTION_TOOL_OUTPUT_DAYS)) is not None:
        removed.tool_outputs = clear_tool_outputs(sessions)
    if (sessions := over_for(settings.RETENTION_RECORDING_DAYS)) is not None:
        removed.recordings = delete_files(sessions, ("recording",))
    audit.record(
        audit.Action.RETENTION_RUN,
        actor_name=actor_name,
        target="session data",
        details={
            "removed": asdict(removed),
            "days": {
                "transcripts": settings.RETENTION_TRANSCRIPT_DAYS,
                "tool_outputs": settings.RETENTION_TOOL_OUTPUT_DAYS,
                "recordings": settings.RETENTION_RECORDING_DAYS,
            },
        },
    )
    log.info("retention_applied", **asdict(removed))
    return removed
