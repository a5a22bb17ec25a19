"""Breakers while Redis is down: they count this process's outcomes in memory (and
open on them), and read the shared state in Redis again when it returns."""

from __future__ import annotations

import time

import pybreaker
import pytest

from ops_app import breakers
from voiceplatform import outage

RETRY_SECONDS = 0.3


@pytest.fixture
def redis_breaker(own_redis, settings):
    settings.REDIS_RETRY_SECONDS = RETRY_SECONDS
    settings.CACHES = {
        "default": {
            "BACKEND": "voiceplatform.cache.FallbackRedisCache",
            "LOCATION": own_redis.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    breaker = pybreaker.CircuitBreaker(
        fail_max=3,
        reset_timeout=60,
        state_storage=breakers.FallbackRedisStorage("vp:test"),
        name="test",
    )
    return own_redis, breaker


def test_a_breaker_opens_on_failures_counted_while_redis_is_down(redis_breaker):
    own_redis, breaker = redis_breaker
    own_redis.kill()

    for _ in range(3):
        breakers.record(breaker, ok=False)

    assert breakers.state_of(breaker) == "open"
    assert outage.redis.down


def test_a_breaker_reads_the_shared_state_again_when_redis_returns(redis_breaker):
    own_redis, breaker = redis_breaker
    breakers.record(breaker, ok=False)
    assert breaker.fail_counter == 1  # in Redis
    own_redis.kill()
    for _ in range(3):
        breakers.record(breaker, ok=False)
    assert breakers.state_of(breaker) == "open"  # in memory

    own_redis.start()  # an empty Redis: nothing open there
    time.sleep(RETRY_SECONDS + 0.1)

    assert breakers.state_of(breaker) == "closed"
    assert not outage.redis.down
    breakers.record(breaker, ok=False)
    assert breaker.fail_counter == 1


def test_state_lives_in_redis_under_pybreakers_own_keys(redis_breaker):
    own_redis, breaker = redis_breaker
    for _ in range(3):
        breakers.record(breaker, ok=False)

    client = own_redis.client()
    try:
        assert client.get("vp:test:pybreaker:state") == b"open"
        assert int(client.get("vp:test:pybreaker:opened_at")) <= time.time()
    finally:
        client.close()


@pytest.fixture
def async_breaker(redis_breaker):
    own_redis, breaker = redis_breaker
    outage.redis.forget()
    yield own_redis, breaker
    outage.redis.forget()


async def test_async_reads_and_counts_share_the_state_the_sync_side_keeps(async_breaker):
    own_redis, breaker = async_breaker
    breakers.record(breaker, ok=False)
    breakers.record(breaker, ok=False)
    assert breaker.fail_counter == 2

    await breakers.arecord(breaker, True)  # a success while closed: the count starts over

    assert breaker.fail_counter == 0
    for _ in range(3):
        await breakers.arecord(breaker, False)
    assert await breakers.ais_open(breaker)
    client = own_redis.client()
    try:
        assert client.get("vp:test:pybreaker:state") == b"open"
    finally:
        client.close()


async def test_a_success_on_an_open_breaker_goes_through_pybreakers_rules(async_breaker):
    _, breaker = async_breaker
    for _ in range(3):
        breakers.record(breaker, ok=False)

    await breakers.arecord(breaker, True)  # not due for a trial: stays open

    assert breakers.state_of(breaker) == "open"
    assert await breakers.ais_open(breaker)


async def test_async_reads_and_counts_use_memory_while_redis_is_down(async_breaker):
    own_redis, breaker = async_breaker
    own_redis.kill()

    assert not await breakers.ais_open(breaker)
    for _ in range(3):
        await breakers.arecord(breaker, False)

    assert outage.redis.down
    assert await breakers.ais_open(breaker)
