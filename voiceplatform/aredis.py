"""Redis on the event loop: one asyncio client per loop, for the request paths' small
reads and writes (breakers, rate limits, the journal's length, session snapshots,
sideband leases), so none of them costs a thread hop.

An error that says Redis is unreachable is reported to voiceplatform.outage, as the
cache does, and `either` then serves the caller's process-local answer instead; while
the outage lasts, Redis is not tried again until REDIS_RETRY_SECONDS have passed."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as redis
from django.conf import settings
from django.core.cache.backends.base import get_key_func
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from voiceplatform import outage

T = TypeVar("T")


@dataclass(frozen=True)
class _Loop:
    """A loop's client, and its turns: at most REDIS_LOOP_CONNECTIONS calls at once
    (so the pool never opens more), the rest waiting for one to finish."""

    location: str
    redis: redis.Redis
    turns: asyncio.Semaphore


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop] = weakref.WeakKeyDictionary()


def url() -> str | None:
    """The default cache's Redis (REDIS_URL), so keys written here are the cache's
    keys; None when the cache is not Redis (the embedded default)."""
    cache = settings.CACHES.get("default", {})
    if "redis" not in cache.get("BACKEND", "").lower():
        return None
    return cache["LOCATION"]


def _loop_client() -> _Loop | None:
    """This loop's client; None without Redis."""
    location = url()
    if location is None:
        return None
    loop = asyncio.get_running_loop()
    existing = _clients.get(loop)
    if existing is None or existing.location != location:
        timeout = settings.REDIS_SOCKET_TIMEOUT_SECONDS
        size = settings.REDIS_LOOP_CONNECTIONS
        # A plain pool: the turns keep it within its size. (redis-py's blocking pool
        # does the same with a lock and a timer around every command, which cost more
        # than the command; and its wait, timed out, read as Redis being away.)
        pool = redis.ConnectionPool.from_url(
            location,
            max_connections=size,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # Once more on a fresh connection: one left from before a Redis restart
            # fails its first command, and Redis is not away for that.
            retry=Retry(NoBackoff(), 1),
        )
        existing = _clients[loop] = _Loop(
            location, redis.Redis(connection_pool=pool), asyncio.Semaphore(size)
        )
    return existing


async def either(on_redis: Callable[[redis.Redis], Awaitable[T]], on_memory: Callable[[], T]) -> T:
    """on_redis(client) when Redis is configured and worth trying, else on_memory().

    A burst waits its turn for a connection, however long: each call in flight ends
    within the socket timeout, so a wait is bounded by the calls ahead of it, and a busy
    process is not an outage (only a call that fails to reach Redis is)."""
    found = _loop_client()
    if found is None:
        return on_memory()

    async def on_its_turn() -> T:
        async with found.turns:
            return await on_redis(found.redis)

    return await outage.redis.aeither(on_its_turn, on_memory)


def cache_key(key: str) -> str:
    """The key the default cache stores `key` under (its prefix and version), as its
    make_key writes it. From the settings: `cache` is a new backend object in every
    request (caches are per context), and building one costs more than the key."""
    config = settings.CACHES["default"]
    make = get_key_func(config.get("KEY_FUNCTION"))
    return make(key, config.get("KEY_PREFIX", ""), config.get("VERSION", 1))
