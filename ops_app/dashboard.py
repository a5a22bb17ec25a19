"""The operations dashboard's data: what /ops/ shows and /ws/ops/ pushes, gathered in a
bounded number of queries however many sessions there are, and cut into the page's
sections (the same fragments for the page and for live updates)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone

from ops_app import charts, degradation, state
from ops_app.forms import ForcedLevelForm, MaintenanceForm
from ops_app.models import AuditEvent
from sessions_app.models import VoiceSession
from tools_app.models import Task, ToolExecution

WINDOW = timedelta(hours=1)
BUCKET = timedelta(minutes=5)
# At most this many live sessions, running tool calls and running tasks are listed (all
# are counted).
LISTED = 50
# Percentiles are computed in Python over at most this many of the hour's newest rows.
SAMPLES = 5000
AUDIT_SHOWN = 20
ACTION_LABELS = dict(AuditEvent.Action.choices)

# Section id -> template: the page lays them out in this order; live updates replace
# them by id.
SECTIONS = {
    "ops-level": "ops/sections/level.html",
    "ops-maintenance": "ops/sections/maintenance.html",
    "ops-forced": "ops/sections/forced.html",
    "ops-breakers": "ops/sections/breakers.html",
    "ops-sessions": "ops/sections/sessions.html",
    "ops-tools": "ops/sections/tools.html",
    "ops-tasks": "ops/sections/tasks.html",
    "ops-hour": "ops/sections/hour.html",
    "ops-audit": "ops/sections/audit.html",
}


async def snapshot() -> dict[str, Any]:
    """Everything the dashboard shows, as plain data (no lazy querysets)."""
    service = await degradation.current(probe=True)
    ops = await state.current()
    forced = ops.forced_level_now()
    data = await sync_to_async(_from_database)(timezone.now())
    return {
        **data,
        "status": service.status,
        "level": service.level,
        "level_name": service.level_name,
        "reasons": service.reasons,
        "maintenance": {
            "on": ops.maintenance,
            "message": ops.maintenance_message,
            "eta": ops.maintenance_eta,
            "since": ops.maintenance_since,
        },
        "forced": None
        if forced is None
        else {
            "level": forced,
            "level_name": degradation.LEVEL_NAMES[forced],
            "reason": ops.forced_reason,
            "until": ops.forced_until,
        },
        "breakers": [{"name": name, "state": state} for name, state in service.breakers.items()],
        "capacity": settings.SESSION_CAPACITY,
    }


def render(
    snap: dict[str, Any],
    *,
    can_operate: bool,
    can_cancel: bool = False,
    can_watch: bool = False,
    can_end: bool = False,
    request: HttpRequest | None = None,
    forms: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Each section's HTML by id. Without a request (a live update) forms carry no CSRF
    token (templates/ops/csrf.html); the page's script adds its own."""
    context = {
        "snap": snap,
        "can_operate": can_operate,
        "can_cancel": can_cancel,
        "can_watch": can_watch,
        "can_end": can_end,
        "forms": {"maintenance": MaintenanceForm(), "level": ForcedLevelForm(), **(forms or {})},
    }
    return {
        section: render_to_string(template, context, request=request)
        for section, template in SECTIONS.items()
    }


def _from_database(now: datetime) -> dict[str, Any]:
    live = VoiceSession.objects.live()
    running = ToolExecution.objects.filter(
        status__in=(ToolExecution.Status.QUEUED, ToolExecution.Status.RUNNING)
    )
    tasks = Task.objects.running()
    return {
        "now": now,
        "live_sessions": {
            "count": live.count(),
            "rows": [
                {**row, "age_seconds": _seconds(now - row["created_at"])}
                for row in live.order_by("created_at").values(
                    "id", "status", "source", "created_at", "pod"
                )[:LISTED]
            ],
        },
        "running_tools": {
            "count": running.count(),
            "rows": [
                {**row, "age_seconds": _seconds(now - row["created_at"])}
                for row in running.order_by("created_at").values(
                    "tool", "call_id", "session_id", "status", "created_at"
                )[:LISTED]
            ],
        },
        "running_tasks": {
            "count": tasks.count(),
            "rows": [
                {**row, "age_seconds": _seconds(now - row["created_at"])}
                for row in tasks.order_by("created_at", "id").values(
                    "id",
                    "session_id",
                    "kind",
                    "tool",
                    "agent",
                    "summary",
                    "progress",
                    "created_at",
                    "cancel_requested_at",
                    "cancelled_by",
                )[:LISTED]
            ],
        },
        "hour": _last_hour(now),
        "audit": [
            {**event, "action_label": ACTION_LABELS.get(event["action"], event["action"])}
            for event in AuditEvent.objects.order_by("-created_at", "-id").values(
                "created_at", "actor_name", "action", "target", "ip", "details"
            )[:AUDIT_SHOWN]
        ],
    }


def _last_hour(now: datetime) -> dict[str, Any]:
    """Twelve five-minute buckets ending at the next five-minute mark (so their labels
    are round), and what happened in them."""
    until = _next_mark(now, BUCKET)
    since = until - WINDOW
    starts = [since + BUCKET * i for i in range(WINDOW // BUCKET)]

    # An error: the session failed, or the service failed one of its tool calls (a
    # tool's own answer, such as a refused path or an unconfigured tool, is no error).
    failed = Q(status=VoiceSession.Status.FAILED) | Q(
        Exists(
            ToolExecution.objects.filter(
                session=OuterRef("pk"),
                status=ToolExecution.Status.FAILED,
                failure__in=ToolExecution.SERVICE_FAILURES,
            )
        )
    )
    per_bucket = {}
    for i, start in enumerate(starts):
        inside = Q(created_at__gte=start, created_at__lt=start + BUCKET)
        per_bucket[f"created_{i}"] = Count("pk", filter=inside)
        per_bucket[f"failed_{i}"] = Count("pk", filter=inside & failed)
    counts = VoiceSession.objects.filter(created_at__gte=since).aggregate(**per_bucket)
    buckets = [
        {"start": start, "created": counts[f"created_{i}"], "failed": counts[f"failed_{i}"]}
        for i, start in enumerate(starts)
    ]
    created = sum(bucket["created"] for bucket in buckets)
    failures = sum(bucket["failed"] for bucket in buckets)

    # Tool calls of the hour's sessions: found through the sessions' created_at index.
    tool_calls = ToolExecution.objects.filter(session__created_at__gte=since)
    outcomes = list(
        tool_calls.filter(status__in=ToolExecution.FINISHED)
        .values("tool")
        .annotate(
            succeeded=Count("pk", filter=Q(status=ToolExecution.Status.SUCCEEDED)),
            failed=Count("pk", filter=Q(status=ToolExecution.Status.FAILED)),
        )
        .order_by("tool")[:LISTED]
    )
    durations: dict[str, list[float]] = {}
    for tool, seconds in (
        tool_calls.filter(duration_seconds__isnull=False)
        .order_by("-created_at")
        .values_list("tool", "duration_seconds")[:SAMPLES]
    ):
        durations.setdefault(tool, []).append(seconds)
    connects = [
        waited.total_seconds()
        for waited in VoiceSession.objects.filter(created_at__gte=since, connected_at__isnull=False)
        .order_by("-created_at")
        .annotate(waited=F("connected_at") - F("created_at"))
        .values_list("waited", flat=True)[:SAMPLES]
    ]
    latencies = [
        {"name": "connect", **_p95(connects)},
        *({"name": tool, **_p95(values)} for tool, values in sorted(durations.items())),
    ]
    return {
        "since": since,
        "until": until,
        "buckets": buckets,
        "sessions_chart": charts.columns(buckets, BUCKET),
        "created": created,
        "failed": failures,
        "error_rate": failures / created if created else None,
        "tools": [
            {**row, "meter": charts.meter(row["succeeded"], row["failed"])} for row in outcomes
        ],
        "latencies": charts.with_bars(latencies, "p95"),
        "sample_cap": SAMPLES,
        "samples_capped": len(connects) == SAMPLES
        or sum(len(values) for values in durations.values()) == SAMPLES,
    }


def _p95(values: list[float]) -> dict[str, Any]:
    """Nearest-rank 95th percentile (None without samples) and the sample count."""
    if not values:
        return {"p95": None, "samples": 0}
    ordered = sorted(values)
    return {"p95": ordered[math.ceil(0.95 * len(ordered)) - 1], "samples": len(ordered)}


def _next_mark(moment: datetime, step: timedelta) -> datetime:
    """The first multiple of step (since the epoch) after moment."""
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    return epoch + step * ((moment - epoch) // step + 1)


def _seconds(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds()))
