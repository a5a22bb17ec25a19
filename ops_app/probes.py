"""Health endpoints with the seed's semantics (7.4).

- GET /health: every check, the service level, and a status: healthy (200), degraded
  (200: something is down but new conversations still work) or unhealthy (503: new
  conversations cannot start, i.e. the OpenAI breaker is open).
- GET /health/live: the process answers (nothing else is asked).
- GET /health/ready: whether to send this pod new sessions: not when Redis is
  unreachable (where it is configured), while draining, or at capacity (503).
"""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse

from ops_app import degradation, drain, health
from sessions_app.models import VoiceSession
from voiceplatform.api import api_view


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
    return JsonResponse(
        {
            "status": status,
            "level": level,
            "reasons": reasons,
            "checks": {name: check.as_dict() for name, check in checks.items()},
        },
        status=503 if status == "unhealthy" else 200,
    )


@api_view("GET")
async def ready(request: HttpRequest) -> JsonResponse:
    reasons = []
    if not (await health.check("redis")).ok:
        reasons.append("redis unreachable")
    if drain.is_draining():
        reasons.append("draining")
    try:
        live_sessions = await VoiceSession.objects.live().filter(pod=settings.POD_NAME).acount()
    except DatabaseError:
        live_sessions = 0  # level 3: sessions are still taken, history is buffered
    if live_sessions >= settings.SESSION_CAPACITY:
        reasons.append("at capacity")
    if reasons:
        return JsonResponse({"status": "not_ready", "reasons": reasons}, status=503)
    return JsonResponse({"status": "ready"})
