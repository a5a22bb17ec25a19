"""Counted slots: how many of a thing (open WebSockets) one key holds at once, kept in
the cache (Redis in production) so that every process sees the same count.

A process that dies cannot give its slots back. So a count lives in buckets of
`lifetime` seconds: a slot is counted in the bucket it was taken in and in the next
one, and whatever holds a slot lets go of it within `lifetime` (a WebSocket consumer
closes itself by then). A crashed process's slots are forgotten two buckets later at
most, instead of holding the key's limit for ever.
"""

from __future__ import annotations

import contextlib
import time

from asgiref.sync import sync_to_async
from django.core.cache import cache


def _bucket_key(name: str, bucket: int) -> str:
    return f"slots:{name}:{bucket}"


def _take(name: str, limit: int, lifetime: int) -> str | None:
    bucket = int(time.time() // lifetime)
    key = _bucket_key(name, bucket)
    # add + incr: atomic in Redis (SET NX, INCR keeps the expiry). The bucket outlives
    # the window it is counted in.
    cache.add(key, 0, timeout=2 * lifetime + 60)
    held = cache.incr(key) + (cache.get(_bucket_key(name, bucket - 1)) or 0)
    if held > limit:
        _give_back(key)
        return None
    return key


def _give_back(key: str) -> None:
    # A bucket that has expired took its count with it: nothing to give back.
    with contextlib.suppress(ValueError):
        cache.decr(key)


async def take(name: str, limit: int, lifetime: int) -> str | None:
    """One slot of name, held for at most lifetime seconds; None when name already
    holds limit of them. Pass what it returns to give_back."""
    # django-redis has no native async API; its async fallbacks are get-then-set.
    return await sync_to_async(_take, thread_sensitive=False)(name, limit, lifetime)


async def give_back(slot: str) -> None:
    await sync_to_async(_give_back, thread_sensitive=False)(slot)
