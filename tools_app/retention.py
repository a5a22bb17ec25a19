"""Workspaces do not outlive their sessions: each is removed once every session using it
(the one it is named after, and any that resumed it) has been over for
TOOL_WORKSPACE_RETENTION_SECONDS, or as soon as none exists; until then a workspace whose
sessions have all ended reserves only what it holds (mounts.shrink)."""

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
    """Workspaces due for removal: every session using it (its own, and those that
    resumed it) ended longer ago than the retention, or none exists any more; never one
    with a tool call still queued or running."""
    names = workspace.session_workspaces()
    if not names:
        return []
    cutoff = timezone.now() - timedelta(seconds=settings.TOOL_WORKSPACE_RETENTION_SECONDS)
    kept = set(
        VoiceSession.objects.filter(workspace__in=names)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=cutoff))
        .values_list("workspace", flat=True)
    )
    kept |= _in_use(names)
    return [name for name in names if name not in kept]


def ended_workspaces() -> list[str]:
    """Workspaces still kept whose sessions have all ended, with no tool call of theirs
    queued or running."""
    names = workspace.session_workspaces()
    if not names:
        return []
    using = VoiceSession.objects.filter(workspace__in=names)
    ended = set(using.filter(ended_at__isnull=False).values_list("workspace", flat=True))
    live = set(using.filter(ended_at__isnull=True).values_list("workspace", flat=True))
    idle = ended - live - _in_use(names)
    return [name for name in names if name in idle]


def _in_use(names: list[str]) -> set[str]:
    return set(
        ToolExecution.objects.filter(
            session__workspace__in=names,
            status__in=(ToolExecution.Status.QUEUED, ToolExecution.Status.RUNNING),
        ).values_list("session__workspace", flat=True)
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
