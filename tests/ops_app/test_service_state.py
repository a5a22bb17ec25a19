"""One state of the service (ops_app.degradation.current) read by /health, /ops/, the
level and breaker metrics and /session: at any moment they say the same thing, and a
breaker's state shows the same everywhere as soon as it changes."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient
from prometheus_client import REGISTRY

from ops_app import breakers, degradation
from tools_app.models import ToolExecution

pytestmark = pytest.mark.django_db(transaction=True)

DRILL_SECONDS = 10


@pytest.fixture
def breakers_reset():
    yield
    for breaker in breakers.all_breakers().values():
        breakers.reset(breaker)


@pytest.fixture
async def ops_viewer() -> AsyncClient:
    def make() -> User:
        user = User.objects.create_user("watcher", password="not-used-1", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_operations"))
        return user

    client = AsyncClient()
    await client.aforce_login(await sync_to_async(make)())
    return client


async def _everywhere(api, ops_viewer) -> dict:
    """What each reader says about the OpenAI breaker and the service right now."""
    health = await api.get("/health")
    page = (await ops_viewer.get("/ops/")).content.decode()
    await api.get("/metrics")
    session = await api.post("/session", content_type="application/json")
    return {
        "health": (health.status_code, health.json()["status"]),
        "health_breaker": health.json()["checks"]["openai_breaker"]["detail"],
        "ops_status": 'id="ops-status">unhealthy<' in page,
        "ops_breaker_open": "pill-open" in page,
        "metric": REGISTRY.get_sample_value("circuit_breaker_state", {"service": "openai"}),
        "session": session.status_code,
    }


async def test_an_open_openai_breaker_reads_the_same_everywhere_until_it_is_reset(
    api, ops_viewer, simulator, settings, breakers_reset
):
    # Given the OpenAI breaker opened by failures, and no trial due for the drill's span.
    settings.OPENAI_BREAKER_RESET_SECONDS = 600
    for _ in range(settings.OPENAI_BREAKER_FAILURES):
        await sync_to_async(breakers.record)(breakers.openai(), False)

    # Every try for DRILL_SECONDS: /health, /ops/, the metric and /session agree.
    seen = []
    until = time.monotonic() + DRILL_SECONDS
    while time.monotonic() < until:
        seen.append(await _everywhere(api, ops_viewer))
        await asyncio.sleep(0.5)
    assert len(seen) >= 2
    for reading in seen:
        assert reading == {
            "health": (503, "unhealthy"),
            "health_breaker": "open",
            "ops_status": True,
            "ops_breaker_open": True,
            "metric": 1.0,
            "session": 503,
        }, reading

    # After an operator resets it, all of them say so at once.
    await sync_to_async(breakers.reset)(breakers.openai())
    after = await _everywhere(api, ops_viewer)
    assert after == {
        "health": (200, "healthy"),
        "health_breaker": "closed",
        "ops_status": False,
        "ops_breaker_open": False,
        "metric": 0.0,
        "session": 201,
    }


async def test_the_level_and_the_health_status_come_from_one_reading(settings, breakers_reset):
    for _ in range(settings.AMPLIFIER_BREAKER_FAILURES):
        await sync_to_async(breakers.record)(breakers.amplifier(), False)

    service = await degradation.current(probe=True)

    assert (service.status, service.level, service.breakers["amplifier"]) == (
        "degraded",
        degradation.REDUCED,
        "open",
    )
    assert any("tools unavailable" in reason for reason in service.reasons)


async def test_the_level_request_paths_read_is_the_level_of_the_service_state(
    settings, breakers_reset
):
    from ops_app import health

    async def both() -> tuple[int, int, str]:
        service = await degradation.current()
        return await degradation.current_level(), service.level, service.status

    assert await both() == (degradation.FULL, degradation.FULL, "healthy")
    # The OpenAI breaker open: new calls are refused, but the level is still full.
    for _ in range(settings.OPENAI_BREAKER_FAILURES):
        await sync_to_async(breakers.record)(breakers.openai(), False)
    assert await both() == (degradation.FULL, degradation.FULL, "unhealthy")
    for _ in range(settings.AMPLIFIER_BREAKER_FAILURES):
        await sync_to_async(breakers.record)(breakers.amplifier(), False)
    assert await both() == (degradation.REDUCED, degradation.REDUCED, "unhealthy")
    health.report_failure("database", "drill: away")
    try:
        assert await both() == (degradation.VOICE_ONLY, degradation.VOICE_ONLY, "unhealthy")
    finally:
        health.report_ok("database", "drill over")


async def test_a_tools_refusal_is_no_service_error_but_a_lost_worker_is(api, simulator):
    session = await api.post("/session", content_type="application/json")
    bearer = {"Authorization": f"Bearer {session.json()['session_token']}"}

    def errors() -> float:
        return sum(
            REGISTRY.get_sample_value(
                "voice_errors_total", {"component": "tools", "error_type": kind}
            )
            or 0.0
            for kind in ToolExecution.SERVICE_FAILURES
        )

    before = errors()
    refused = await api.post(
        "/tools/read_file",
        {"call_id": "call_refused", "arguments": {"file_path": "../../etc/passwd"}},
        content_type="application/json",
        headers=bearer,
    )
    assert refused.json()["status"] == "failed"
    execution = await ToolExecution.objects.aget(call_id="call_refused")
    assert execution.failure and execution.failure not in ToolExecution.SERVICE_FAILURES
    assert errors() == before

    from tools_app import worker

    lost = await ToolExecution.objects.acreate(
        session_id=execution.session_id, call_id="call_lost", tool="bash", status="running"
    )
    await sync_to_async(worker.fail_for_the_bridge)(lost, worker.WORKER_LOST, "worker_lost")

    assert errors() == before + 1
    assert (await ToolExecution.objects.aget(pk=lost.pk)).failure == "worker_lost"
