"""The OpenAI circuit breaker (seed 7.3): open on the 5th failure, refuse at once with
503 + Retry-After while open, let a trial through after the reset time, close on success."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from ops_app import breakers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _closed_breaker(settings):
    settings.OPENAI_MAX_RETRIES = 0
    yield
    breakers.reset(breakers.openai())


async def _create(api):
    return await api.post("/session", content_type="application/json")


async def test_the_breaker_opens_on_the_fifth_failure_and_then_refuses_at_once(api, simulator):
    simulator.fault("error", status=500)

    failed = [(await _create(api)).status_code for _ in range(5)]
    simulator.fault("off")  # the upstream is fine again, but the breaker is open
    refused = await _create(api)

    assert failed == [502] * 5
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "upstream_circuit_open"
    assert 1 <= int(refused["Retry-After"]) <= 31


async def test_after_the_reset_time_a_trial_call_closes_it_again(api, simulator, settings):
    settings.OPENAI_BREAKER_RESET_SECONDS = 1
    simulator.fault("error", status=500)
    for _ in range(5):
        await _create(api)
    simulator.fault("off")

    await asyncio.sleep(1.2)
    trial = await _create(api)
    state = await sync_to_async(breakers.state_of)(breakers.openai())

    assert trial.status_code == 201
    assert state == "closed"


async def test_refusals_of_what_we_sent_do_not_count(api, simulator):
    simulator.fault("rate_limit", retry_after_ms=100)

    limited = [(await _create(api)).status_code for _ in range(6)]
    simulator.fault("off")
    after = await _create(api)

    assert limited == [503] * 6  # upstream_rate_limited, each tried upstream
    assert after.status_code == 201


async def test_the_metrics_show_the_breaker_open(api, simulator):
    simulator.fault("error", status=500)
    for _ in range(5):
        await _create(api)

    page = (await api.get("/metrics")).content.decode()

    assert 'circuit_breaker_state{service="openai"} 1.0' in page
    assert 'circuit_breaker_state{service="amplifier"} 0.0' in page


async def test_a_success_between_failures_starts_the_count_again(api, simulator):
    simulator.fault("error", status=500, count=4)
    first = [(await _create(api)).status_code for _ in range(4)]
    between = await _create(api)
    simulator.fault("error", status=500, count=4)
    second = [(await _create(api)).status_code for _ in range(4)]
    after = await _create(api)

    assert first == second == [502] * 4
    assert between.status_code == after.status_code == 201  # never open: 4, not 8, in a row
