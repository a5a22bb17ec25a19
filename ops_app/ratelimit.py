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
from voiceplatform import aredis
from voiceplatform.errors import TooManyRequests

# INCR, and the first hit of a window sets when it expires: one command (a pipeline of
# SET NX + INCR is the same round trip at twice the client's CPU).
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


async def _acount(key: str, window_seconds: int) -> int | None:
    """The hit counted in Redis on the event loop (one round trip, under the key the
    cache uses); None while Redis is away or not configured."""
    full = aredis.cache_key(key)
    return await aredis.either(
        lambda redis: redis.eval(_COUNT, 1, full, window_seconds + 1), lambda: None
    )


def _count(key: str, window_seconds: int) -> int:
    # The cache's add + incr (in Redis, or in this process while Redis is away).
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
    count = await _acount(key, window_seconds)
    if count is None and aredis.url() is None:
        count = _count(key, window_seconds)  # the local-memory cache: no I/O
    elif count is None:
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
