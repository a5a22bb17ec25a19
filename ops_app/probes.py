"""Health endpoints with the seed's semantics (7.4).

- GET /health: every check, the service level, and a status: healthy (200), degraded
  (200: something is down but new conversations still work) or unhealthy (503: new
  conversations cannot start, i.e. the OpenAI breaker is open).
- GET /health/live: the process answers (nothing else is asked).
- GET /health/ready: whether to send this pod new sessions, from what is local to the
  pod only: not while starting, draining or at capacity (503). Never a shared
  dependency (Redis, PostgreSQL, OpenAI, the workers): all pods lose one together, and
  a readiness that followed it would take every pod out of the Service at once, so the
  fallbacks built for the outage would never serve a request. Those degrade /health and
  the service level instead (DESIGN.md replaces the seed's readiness rule here).
"""

from __future__ import annotations

import asyncio
import contextlib

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse

from ops_app import degradation, drain, health
from sessions_app.models import VoiceSession
from voiceplatform import lifecycle
from voiceplatform.api import api_view

NOT_READY_RETRY_SECONDS = 10
# This pod's live sessions are counted in the database; a database that is slow or away
# must not decide readiness, so the count waits at most this long and otherwise the
# last one this process read stands.
COUNT_TIMEOUT_SECONDS = 1.0
_last_count = 0


@api_view("GET")
async def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "alive"})


@api_view("GET")
async def overall(request: HttpRequest) -> JsonResponse:
    checks = await health.run_all()
    level, reasons = await degradation.explain()
    if not checks["openai_breaker"].ok:
        status = "unhealthy"
    elif level > degradation.FULL or not all(check.ok for check in checks.values()):
        status = "degraded"
    else:
        status = "healthy"
    response = JsonResponse(
        {
            "status": status,
            "level": level,
            "reasons": reasons,
            "checks": {name: check.as_dict() for name, check in checks.items()},
        },
        status=503 if status == "unhealthy" else 200,
    )
    if status == "unhealthy":
        response["Retry-After"] = str(settings.OPENAI_BREAKER_RESET_SECONDS)
    return response


@api_view("GET")
async def ready(request: HttpRequest) -> JsonResponse:
    reasons = []
    if lifecycle.is_starting():
        reasons.append("starting")
    if drain.is_draining():
        reasons.append("draining")
    if await _live_sessions_here() >= settings.SESSION_CAPACITY:
        reasons.append("at capacity")
    if reasons:
        response = JsonResponse({"status": "not_ready", "reasons": reasons}, status=503)
        response["Retry-After"] = str(NOT_READY_RETRY_SECONDS)
        return response
    return JsonResponse({"status": "ready"})


async def _live_sessions_here() -> int:
    """This pod's live sessions: the last count read when the database does not answer
    within COUNT_TIMEOUT_SECONDS (at level 3 sessions are still taken, and the count
    comes back with the database)."""
    global _last_count
    query = VoiceSession.objects.live().filter(pod=settings.POD_NAME).acount()
    with contextlib.suppress(DatabaseError, TimeoutError):
        _last_count = await asyncio.wait_for(query, COUNT_TIMEOUT_SECONDS)
    return _last_count
