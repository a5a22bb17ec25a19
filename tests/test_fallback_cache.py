"""The cache while Redis is down: process-local, counts stay atomic, a dead or hung
Redis costs one failed call per retry window, and Redis is used again when it returns.
Each test stops only a Redis of its own."""

from __future__ import annotations

import socket
import time

import pytest
import redis
from django.core.cache import cache

from ops_app import ratelimit
from voiceplatform import outage
from voiceplatform.errors import TooManyRequests

RETRY_SECONDS = 0.3


def _caches(location: str) -> dict:
    return {
        "default": {
            "BACKEND": "voiceplatform.cache.FallbackRedisCache",
            "LOCATION": location,
            "KEY_PREFIX": "fallback-test",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }


@pytest.fixture
def redis_cache(own_redis, settings):
    settings.REDIS_RETRY_SECONDS = RETRY_SECONDS
    settings.CACHES = _caches(own_redis.url)
    return own_redis


@pytest.fixture
def hung_redis(settings):
    """An address that takes connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        settings.REDIS_RETRY_SECONDS = 5
        settings.CACHES = _caches(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        yield


def _in_redis(own_redis, pattern: str) -> list[bytes]:
    client = redis.Redis.from_url(own_redis.url)
    try:
        return list(client.scan_iter(pattern))
    finally:
        client.close()


def test_it_counts_locally_while_redis_is_down_and_never_raises(redis_cache):
    cache.set("greeting", "hello")
    redis_cache.kill()

    assert cache.get("greeting") is None  # Redis's data is out of reach, not an error
    assert cache.add("hits", 0, timeout=60) is True
    assert [cache.incr("hits") for _ in range(3)] == [1, 2, 3]
    assert cache.add("hits", 0, timeout=60) is False  # add stays "only if absent"
    cache.set("note", "kept here")
    assert cache.get("note") == "kept here"
    assert cache.delete_pattern("hit*") == 1
    assert cache.get("hits") is None
    assert outage.redis.down


@pytest.mark.django_db(transaction=True)
async def test_rate_limits_still_refuse_past_the_limit_while_redis_is_down(redis_cache):
    redis_cache.kill()

    for _ in range(3):
        await ratelimit.hit("outage-test", limit=3)
    with pytest.raises(TooManyRequests):
        await ratelimit.hit("outage-test", limit=3)


def test_a_hung_redis_costs_one_timeout_per_retry_window_not_one_per_call(hung_redis):
    started = time.monotonic()
    for number in range(20):
        cache.add(f"key-{number}", number)
        cache.get(f"key-{number}")
    elapsed = time.monotonic() - started

    # One 0.5 s connect or read timeout, then the local cache for the rest.
    assert elapsed < 2.0, elapsed
    assert cache.get("key-7") == 7


def test_it_goes_back_to_redis_when_redis_returns(redis_cache):
    redis_cache.kill()
    cache.add("during", 1)
    assert outage.redis.down

    redis_cache.start()
    time.sleep(RETRY_SECONDS + 0.1)
    cache.add("after", 0, timeout=60)
    assert cache.incr("after") == 1

    assert not outage.redis.down
    assert _in_redis(redis_cache, "*after")
    # What was kept locally in the outage is gone: Redis is the truth again.
    assert cache.get("during") is None


def test_delete_pattern_clears_both_sides(redis_cache):
    cache.set("usage:a", 1)
    redis_cache.kill()
    cache.set("usage:b", 2)  # local: Redis is down
    redis_cache.start()
    time.sleep(RETRY_SECONDS + 0.1)
    cache.set("usage:c", 3)  # Redis again

    cache.delete_pattern("usage:*")

    assert cache.get_many(["usage:a", "usage:b", "usage:c"]) == {}
    assert _in_redis(redis_cache, "*usage:*") == []


@pytest.mark.django_db(transaction=True)
async def test_a_session_starts_while_redis_is_down(api, simulator, redis_cache):
    redis_cache.kill()

    response = await api.post("/session", content_type="application/json")

    assert response.status_code == 201, response.content
    assert response.json()["session_token"]
