"""Fixed-window rate limits kept in the cache (Redis in production)."""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.core.cache import cache

from ops_app import audit
from ops_app.models import AuditEvent
from voiceplatform.errors import TooManyRequests


def _count(key: str, window_seconds: int) -> int:
    # add + incr: atomic in Redis (SET NX, INCR); django-redis has no native async API,
    # and its async fallbacks are a get-then-set, so this runs in a thread instead.
    cache.add(key, 0, timeout=window_seconds + 1)
    return cache.incr(key)


async def hit(bucket: str, limit: int, window_seconds: int = 60) -> None:
    """Counts one hit on bucket; 429 with Retry-After past `limit` in the window. The
    first refusal of a bucket in each window is audited, and only that one: the count
    is atomic, so exactly one request in each window sees limit + 1."""
    now = time.time()
    key = f"rl:{bucket}:{int(now // window_seconds)}"
    count = await sync_to_async(_count, thread_sensitive=False)(key, window_seconds)
    if count == limit + 1:
        await audit.arecord(
            AuditEvent.Action.RATE_LIMITED,
            target=f"bucket {bucket}",
            details={"bucket": bucket, "limit": limit, "window_seconds": window_seconds},
        )
    if count > limit:
        retry_after = int(window_seconds - (now % window_seconds)) + 1
        raise TooManyRequests(
            f"Too many requests; try again in {retry_after} s.", retry_after=retry_after
        )
