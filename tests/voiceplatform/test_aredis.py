"""Redis on the event loop (voiceplatform.aredis): a burst larger than the loop's
connections waits its turn, on at most REDIS_LOOP_CONNECTIONS connections, and is
never taken for Redis being away."""

from __future__ import annotations

import asyncio
import time

from voiceplatform import aredis, outage


async def test_a_burst_past_the_loops_connections_waits_its_turn_and_is_no_outage(settings):
    settings.REDIS_LOOP_CONNECTIONS = 2
    in_flight, most = 0, 0

    async def slow(redis) -> str:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            # Holds its connection for 0.4 s (nothing is ever pushed to this list).
            await redis.blpop(f"aredis-test:{time.monotonic_ns()}", timeout=0.4)
        finally:
            in_flight -= 1
        return "redis"

    started = time.monotonic()
    answers = await asyncio.gather(*(aredis.either(slow, lambda: "memory") for _ in range(8)))
    took = time.monotonic() - started

    assert answers == ["redis"] * 8  # every one of them waited for Redis
    assert most == 2
    assert took >= 1.5  # four rounds of two, not all at once
    assert not outage.redis.down


async def test_without_redis_the_answer_is_the_process_local_one(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

    async def never(redis) -> str:
        raise AssertionError("Redis is not configured")

    assert await aredis.either(never, lambda: "memory") == "memory"
