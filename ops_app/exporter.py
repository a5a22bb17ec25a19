"""GET /metrics: the Prometheus exposition of this process, with the gauges that
describe the service (live sessions, tasks running, capacity, level, breakers) read at
scrape time.
With METRICS_BEARER_TOKEN set it answers only `Authorization: Bearer <token>`."""

from __future__ import annotations

import contextlib
import secrets

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ops_app import breakers, degradation
from ops_app.metrics import (
    BREAKER_STATE_VALUES,
    circuit_breaker_state,
    voice_degradation_level,
    voice_sessions_active,
    voice_sessions_capacity,
    voice_tasks_running,
)
from sessions_app.models import VoiceSession
from tools_app.models import Task
from voiceplatform.api import api_view, bearer_token
from voiceplatform.errors import ErrorCode, Unauthorized


@api_view("GET")
async def metrics(request: HttpRequest) -> HttpResponse:
    expected = settings.METRICS_BEARER_TOKEN
    if expected and not secrets.compare_digest(
        bearer_token(request.headers).encode("utf-8", "replace"), expected.encode()
    ):
        raise Unauthorized(
            "Send Authorization: Bearer <METRICS_BEARER_TOKEN>.", code=ErrorCode.UNAUTHORIZED
        )
    await refresh()
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


async def refresh() -> None:
    """Sets the service gauges; a dependency that is down leaves its last value."""
    pod = settings.POD_NAME
    voice_sessions_capacity.labels(pod=pod).set(settings.SESSION_CAPACITY)
    with contextlib.suppress(DatabaseError):
        live = await VoiceSession.objects.live().filter(pod=pod).acount()
        voice_sessions_active.labels(region=settings.REGION, pod=pod).set(live)
        voice_tasks_running.set(await Task.objects.running().acount())
    voice_degradation_level.set(await degradation.current_level())
    states = await sync_to_async(breakers.states, thread_sensitive=False)()
    for service, state in states.items():
        circuit_breaker_state.labels(service=service).set(BREAKER_STATE_VALUES[state])
