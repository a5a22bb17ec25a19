"""Fixed-window rate limits kept in the cache (Redis in production).

Each hit also notes, for the request it belongs to, the tightest limit it met; the
response then carries it as X-RateLimit-Limit / -Remaining / -Reset (see
RateLimitHeadersMiddleware), on success and on 429 alike.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.core.cache import cache

from ops_app import audit
from ops_app.models import AuditEvent
from voiceplatform.errors import TooManyRequests


def _count(key: str, window_seconds: int) -> int:
    # add + incr: atomic in Redis (SET NX, INCR); django-redis has no native async API,
    # and its async fallbacks are a get-then-set, so this runs in a thread instead.
    cache.add(key, 0, timeout=window_seconds + 1)
    try:
        return cache.incr(key)
    except ValueError:
        # The key was added on one side of a Redis outage and counted on the other
        # (voiceplatform.cache): start it again where the count now lives.
        cache.add(key, 0, timeout=window_seconds + 1)
        return cache.incr(key)


@dataclass(frozen=True)
class Standing:
    limit: int
    remaining: int
    reset_seconds: int


# The tightest standing of the current request (None outside one, or before any hit).
current: contextvars.ContextVar[Standing | None] = contextvars.ContextVar(
    "ratelimit_standing", default=None
)


def _note(standing: Standing) -> None:
    known = current.get()
    if known is None or standing.remaining < known.remaining:
        current.set(standing)


async def hit(bucket: str, limit: int, window_seconds: int = 60, *, audited: bool = True) -> None:
    """Counts one hit on bucket; 429 with Retry-After past `limit` in the window. The
    first refusal of a bucket in each window is audited (unless audited is off, for a
    probe of our own), and only that one: the count is atomic, so exactly one request in
    each window sees limit + 1."""
    now = time.time()
    key = f"rl:{bucket}:{int(now // window_seconds)}"
    count = await sync_to_async(_count, thread_sensitive=False)(key, window_seconds)
    reset = int(window_seconds - (now % window_seconds)) + 1
    _note(Standing(limit=limit, remaining=max(0, limit - count), reset_seconds=reset))
    if count == limit + 1 and audited:
        await audit.arecord(
            AuditEvent.Action.RATE_LIMITED,
            target=f"bucket {bucket}",
            details={"bucket": bucket, "limit": limit, "window_seconds": window_seconds},
        )
    if count > limit:
        raise TooManyRequests(f"Too many requests; try again in {reset} s.", retry_after=reset)
