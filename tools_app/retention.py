"""Workspaces do not outlive their sessions: each is removed once its session has been
over for TOOL_WORKSPACE_RETENTION_SECONDS, or as soon as its session no longer exists;
until then an ended session's workspace reserves only what it holds (mounts.shrink)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import structlog
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from sessions_app.models import VoiceSession
from tools_app import mounts, workspace
from tools_app.models import ToolExecution

log = structlog.get_logger(__name__)


def expired_workspaces() -> list[str]:
    """Session ids whose workspace is due for removal: the session ended longer ago
    than the retention, or is gone; never one with a tool call still queued or running."""
    names = workspace.session_workspaces()
    if not names:
        return []
    cutoff = timezone.now() - timedelta(seconds=settings.TOOL_WORKSPACE_RETENTION_SECONDS)
    kept = set(
        VoiceSession.objects.filter(pk__in=names)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=cutoff))
        .values_list("pk", flat=True)
    )
    kept |= _in_use(names)
    return [name for name in names if name not in kept]


def ended_workspaces() -> list[str]:
    """Session ids whose session has ended while their workspace is still kept, with no
    tool call of theirs queued or running."""
    names = workspace.session_workspaces()
    if not names:
        return []
    ended = set(
        VoiceSession.objects.filter(pk__in=names, ended_at__isnull=False).values_list(
            "pk", flat=True
        )
    )
    idle = ended - _in_use(names)
    return [name for name in names if name in idle]


def _in_use(names: list[str]) -> set[str]:
    return set(
        ToolExecution.objects.filter(
            session_id__in=names,
            status__in=(ToolExecution.Status.QUEUED, ToolExecution.Status.RUNNING),
        ).values_list("session_id", flat=True)
    )


def shrink_ended_workspaces() -> int:
    """Sizes the kept workspaces of ended sessions to their contents, freeing room for
    new ones under TOOL_WORKSPACE_TOTAL_BYTES; returns how many were looked at."""
    names = ended_workspaces()
    for session_id in names:
        try:
            mounts.shrink(Path(settings.TOOL_WORKSPACE_ROOT) / session_id)
        except OSError:
            log.exception("workspace_not_shrunk", session_id=session_id)
    return len(names)


def remove_expired_workspaces() -> int:
    """Removes the workspaces due; returns how many went."""
    removed = 0
    for session_id in expired_workspaces():
        try:
            removed += workspace.remove_workspace(session_id)
        except OSError:
            log.exception("workspace_not_removed", session_id=session_id)
    if removed:
        log.info("workspaces_removed", count=removed)
    return removed
