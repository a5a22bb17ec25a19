"""Server-rendered pages: the browser voice client, or the maintenance page."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie

from ops_app import degradation, state
from sessions_app import events

SESSION_PLACEHOLDER = "SESSION_ID"
TASK_PLACEHOLDER = "TASK_ID"


@ensure_csrf_cookie
async def client(request: HttpRequest) -> HttpResponse:
    level = await degradation.current_level()
    if level >= degradation.MAINTENANCE:
        ops = await state.current()
        response = render(
            request,
            "voice/maintenance.html",
            {"message": ops.maintenance_said(), "expected_back": ops.expected_back()},
            status=503,
        )
        response["Retry-After"] = str(settings.MAINTENANCE_RETRY_AFTER_SECONDS)
        return response
    user = await request.auser()
    return render(
        request,
        "voice/client.html",
        {
            # Signed-in users see their recent conversations, to resume one.
            "signed_in": user.is_authenticated,
            "session_max_seconds": settings.SESSION_MAX_SECONDS,
            "stats_interval_seconds": settings.CLIENT_STATS_INTERVAL_SECONDS,
            "relayed_types": " ".join(events.RELAYED_TYPES),
            # A task's URLs, its ids left as placeholders for the page to fill in.
            "task_url": reverse("task", args=[SESSION_PLACEHOLDER, TASK_PLACEHOLDER]),
            "task_cancel_url": reverse("task-cancel", args=[SESSION_PLACEHOLDER, TASK_PLACEHOLDER]),
        },
    )
