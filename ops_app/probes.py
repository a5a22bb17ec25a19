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
import dataclasses

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from health_check import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from ops_app import degradation, drain
from sessions_app.models import VoiceSession
from voiceplatform import lifecycle
from voiceplatform.api import api_view

NOT_READY_RETRY_SECONDS = 10
# This pod's live sessions are counted in the database; a database that is slow or away
# must not decide readiness, so the count waits at most this long and otherwise the
# last one this process read stands.
COUNT_TIMEOUT_SECONDS = 1.0
_last_count = 0


class Overall(HealthCheckView):
    """GET /health: the service's state (ops_app.degradation.current, which runs the
    checks) in our JSON shape; `?format=text|openmetrics|atom|rss` gives the
    library's own renderings of the same results."""

    checks = ()  # the service state runs them (ops_app.health)

    async def get(self, request: HttpRequest, *args, **kwargs):
        service = await degradation.current(probe=True)
        self.results = [c.result for c in service.checks.values() if c.result is not None]
        failing = any(result.error for result in self.results)
        match request.GET.get("format"):
            case "text":
                return self.render_to_response_text(500 if failing else 200)
            case "openmetrics":
                return self.render_to_response_openmetrics()
            case "atom":
                return self.render_to_response_atom()
            case "rss":
                return self.render_to_response_rss()
        unhealthy = service.status == degradation.UNHEALTHY
        response = JsonResponse(
            {
                "status": service.status,
                "level": service.level,
                "reasons": service.reasons,
                "checks": {name: check.as_dict() for name, check in service.checks.items()},
            },
            status=503 if unhealthy else 200,
        )
        if unhealthy:
            response["Retry-After"] = str(settings.OPENAI_BREAKER_RESET_SECONDS)
        return response


@dataclasses.dataclass
class Starting(HealthCheck):
    async def run(self) -> None:
        if lifecycle.is_starting():
            raise ServiceUnavailable("starting")


@dataclasses.dataclass
class Draining(HealthCheck):
    async def run(self) -> None:
        if drain.is_draining():
            raise ServiceUnavailable("draining")


@dataclasses.dataclass
class UnderCapacity(HealthCheck):
    async def run(self) -> None:
        if await _live_sessions_here() >= settings.SESSION_CAPACITY:
            raise ServiceUnavailable("at capacity")


class Ready(HealthCheckView):
    """GET /health/ready: whether to send this pod new sessions, from local checks only."""

    checks = (Starting, Draining, UnderCapacity)

    async def get(self, request: HttpRequest, *args, **kwargs):
        results = await asyncio.gather(*(check.get_result() for check in self.get_checks()))
        reasons = [result.error.message for result in results if result.error is not None]
        if reasons:
            response = JsonResponse({"status": "not_ready", "reasons": reasons}, status=503)
            response["Retry-After"] = str(NOT_READY_RETRY_SECONDS)
            return response
        return JsonResponse({"status": "ready"})


class Live(HealthCheckView):
    """GET /health/live: the process answers; nothing else is asked."""

    checks = ()

    async def get(self, request: HttpRequest, *args, **kwargs):
        return JsonResponse({"status": "alive"})


overall = api_view("GET")(Overall.as_view())
ready = api_view("GET")(Ready.as_view())
live = api_view("GET")(Live.as_view())


async def _live_sessions_here() -> int:
    """This pod's live sessions: the last count read when the database does not answer
    within COUNT_TIMEOUT_SECONDS (at level 3 sessions are still taken, and the count
    comes back with the database)."""
    global _last_count
    query = VoiceSession.objects.live().filter(pod=settings.POD_NAME).acount()
    with contextlib.suppress(DatabaseError, TimeoutError):
        _last_count = await asyncio.wait_for(query, COUNT_TIMEOUT_SECONDS)
    return _last_count
