"""GET /metrics: django-prometheus's exporter (this process's registry, or every
process's samples under PROMETHEUS_MULTIPROC_DIR), with the gauges that describe the
service (live sessions, tasks running, capacity, level, breakers) read at scrape time.
With METRICS_BEARER_TOKEN set it answers only `Authorization: Bearer <token>`."""

from __future__ import annotations

import contextlib
import secrets

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django_prometheus.exports import ExportToDjangoView

from ops_app import degradation
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
    return ExportToDjangoView(request)


async def refresh() -> None:
    """Sets the service gauges; a dependency that is down leaves its last value."""
    pod = settings.POD_NAME
    voice_sessions_capacity.labels(pod=pod).set(settings.SESSION_CAPACITY)
    with contextlib.suppress(DatabaseError):
        live = await VoiceSession.objects.live().filter(pod=pod).acount()
        voice_sessions_active.labels(region=settings.REGION, pod=pod).set(live)
        voice_tasks_running.set(await Task.objects.running().acount())
    service = await degradation.current()
    voice_degradation_level.set(service.level)
    for name, state in service.breakers.items():
        if state in BREAKER_STATE_VALUES:  # not read in time: the last value stands
            circuit_breaker_state.labels(service=name).set(BREAKER_STATE_VALUES[state])
