"""/health, /health/live and /health/ready with the seed's semantics (7.4)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from health_check.exceptions import ServiceUnavailable

from ops_app import breakers, drain, health, health_checks
from sessions_app.models import VoiceSession

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = {
    "database",
    "redis",
    "workers",
    "worker_isolation",
    "openai_breaker",
    "amplifier_breaker",
    "storage",
    "disk",
    "journal",
}


@pytest.fixture
def breakers_reset():
    yield
    for breaker in breakers.all_breakers().values():
        breakers.reset(breaker)


async def _open(breaker, failures: int) -> None:
    for _ in range(failures):
        await sync_to_async(breakers.record)(breaker, False)


async def test_all_checks_passing_is_healthy_at_level_one(api):
    response = await api.get("/health")

    body = response.json()
    assert response.status_code == 200
    assert (body["status"], body["level"]) == ("healthy", 1)
    assert set(body["checks"]) == CHECKS
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["workers"]["status"] == "disabled"  # tasks run in-process here


async def test_an_open_openai_breaker_is_unhealthy(api, settings, breakers_reset):
    await _open(breakers.openai(), settings.OPENAI_BREAKER_FAILURES)

    response = await api.get("/health")

    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["checks"]["openai_breaker"]["status"] == "failing"


async def test_tools_down_is_degraded_but_still_serving(api, settings, breakers_reset):
    await _open(breakers.amplifier(), settings.AMPLIFIER_BREAKER_FAILURES)

    response = await api.get("/health")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["level"]) == ("degraded", 2)


async def test_a_hung_database_cannot_hold_a_probe_past_the_bound(api, monkeypatch):
    def hung(self) -> None:
        time.sleep(5)

    monkeypatch.setattr(health_checks.PooledDatabase, "run", hung)
    started = time.monotonic()

    response = await api.get("/health")

    elapsed = time.monotonic() - started
    database = response.json()["checks"]["database"]
    assert elapsed < health.CHECK_TIMEOUT_SECONDS + 1.5
    assert database["status"] == "failing" and "no answer" in database["detail"]
    assert response.json()["status"] == "degraded"


async def test_checks_are_kept_briefly_so_probes_cannot_hammer_the_backends(api, monkeypatch):
    calls = []
    real = health_checks.Storage.run

    def counted(self) -> None:
        calls.append(1)
        real(self)

    monkeypatch.setattr(health_checks.Storage, "run", counted)
    # Long enough that a slow machine cannot outlast it while the probes arrive.
    monkeypatch.setattr(health, "FRESH_SECONDS", 60.0)
    responses = await asyncio.gather(*(api.get("/health") for _ in range(10)))

    assert {response.status_code for response in responses} == {200}
    assert len(calls) == 1


async def test_live_answers_whatever_else_is_down(api, settings, breakers_reset):
    settings.MAINTENANCE_MODE = True
    await _open(breakers.openai(), settings.OPENAI_BREAKER_FAILURES)

    response = await api.get("/health/live")

    assert response.status_code == 200 and response.json() == {"status": "alive"}


async def test_ready_until_at_capacity(api, settings):
    settings.SESSION_CAPACITY = 1
    ready = await api.get("/health/ready")
    await VoiceSession.objects.acreate(
        status="active",
        model="gpt-realtime",
        voice="marin",
        pod=settings.POD_NAME,
        expires_at=timezone.now() + timedelta(minutes=5),
    )

    full = await api.get("/health/ready")

    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert full.status_code == 503 and full.json()["reasons"] == ["at capacity"]


async def test_not_ready_while_draining(api):
    drain.start()
    try:
        draining = await api.get("/health/ready")
    finally:
        drain.stop()
    after = await api.get("/health/ready")

    assert draining.status_code == 503 and "draining" in draining.json()["reasons"]
    assert after.status_code == 200


async def test_ready_whatever_shared_dependency_is_down(api, settings, monkeypatch, breakers_reset):
    # Given Redis and the database failing their checks and both breakers open: every
    # pod sees the same, and readiness must not take them all out of the Service.
    async def unreachable(self) -> None:
        raise ServiceUnavailable("Connection refused")

    monkeypatch.setattr(health_checks.SharedRedis, "run", unreachable)
    monkeypatch.setattr(health_checks.PooledDatabase, "run", unreachable)
    await _open(breakers.openai(), settings.OPENAI_BREAKER_FAILURES)
    await _open(breakers.amplifier(), settings.AMPLIFIER_BREAKER_FAILURES)

    ready = await api.get("/health/ready")
    overall = await api.get("/health")

    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert overall.json()["checks"]["redis"]["status"] == "failing"
    assert overall.json()["status"] == "unhealthy"


async def test_a_hung_database_cannot_hold_readiness(api, monkeypatch):
    async def hung(self) -> int:
        await asyncio.Event().wait()  # the database never answers
        return 0

    monkeypatch.setattr(type(VoiceSession.objects.live()), "acount", hung)

    # Bounded so that a probe waiting on the database fails instead of hanging.
    response = await asyncio.wait_for(api.get("/health/ready"), 20)

    assert response.status_code == 200 and response.json() == {"status": "ready"}


async def test_not_ready_while_the_server_process_is_starting(api, monkeypatch):
    # Given a server whose start work fails once (it is tried again on the next call).
    from voiceplatform import lifecycle

    attempts = []

    def start_once_failing() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("not yet")

    async def app(scope, receive, send):
        return None

    monkeypatch.setattr(lifecycle, "started", start_once_failing)
    server = lifecycle.StartsOnFirstCall(app)

    await server({"type": "http"}, None, None)
    starting = await api.get("/health/ready")
    await server({"type": "http"}, None, None)
    started = await api.get("/health/ready")

    assert starting.status_code == 503 and starting.json()["reasons"] == ["starting"]
    assert started.status_code == 200 and len(attempts) == 2
