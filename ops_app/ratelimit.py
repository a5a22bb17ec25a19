"""Fixed-window rate limits kept in the cache (Redis in production)."""

from __future__ import annotations

import time

from django.core.cache import cache

from voiceplatform.errors import TooManyRequests


async def hit(bucket: str, limit: int, window_seconds: int = 60) -> None:
    """Counts one hit on bucket; 429 with Retry-After past `limit` in the window."""
    now = time.time()
    window = int(now // window_seconds)
    key = f"rl:{bucket}:{window}"
    await cache.aadd(key, 0, timeout=window_seconds + 1)
    count = await cache.aincr(key)
    if count > limit:
        retry_after = int(window_seconds - (now % window_seconds)) + 1
        raise TooManyRequests(
            f"Too many requests; try again in {retry_after} s.", retry_after=retry_after
        )
