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
from typing import TypeVar

import redis.asyncio as redis
from django.conf import settings
from django.core.cache.backends.base import get_key_func
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from voiceplatform import outage

T = TypeVar("T")

# How long a caller waits for a free connection before the wait counts as Redis away.
POOL_WAIT_SECONDS = 5.0

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, redis.Redis]] = (
    weakref.WeakKeyDictionary()
)


def url() -> str | None:
    """The default cache's Redis (REDIS_URL), so keys written here are the cache's
    keys; None when the cache is not Redis (the embedded default)."""
    cache = settings.CACHES.get("default", {})
    if "redis" not in cache.get("BACKEND", "").lower():
        return None
    return cache["LOCATION"]


def client() -> redis.Redis | None:
    """This loop's client; None without Redis."""
    location = url()
    if location is None:
        return None
    loop = asyncio.get_running_loop()
    existing = _clients.get(loop)
    if existing is None or existing[0] != location:
        timeout = settings.REDIS_SOCKET_TIMEOUT_SECONDS
        # A burst of requests waits its turn for one of a bounded set of connections
        # (a plain pool refuses past its size, and that would read as an outage).
        pool = redis.BlockingConnectionPool.from_url(
            location,
            max_connections=settings.REDIS_LOOP_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # Once more on a fresh connection: one left from before a Redis restart
            # fails its first command, and Redis is not away for that.
            retry=Retry(NoBackoff(), 1),
        )
        found = redis.Redis(connection_pool=pool)
        existing = _clients[loop] = (location, found)
    return existing[1]


async def either(on_redis: Callable[[redis.Redis], Awaitable[T]], on_memory: Callable[[], T]) -> T:
    """on_redis(client) when Redis is configured and worth trying, else on_memory()."""
    found = client()
    if found is None:
        return on_memory()
    return await outage.redis.aeither(lambda: on_redis(found), on_memory)


def cache_key(key: str) -> str:
    """The key the default cache stores `key` under (its prefix and version), as its
    make_key writes it. From the settings: `cache` is a new backend object in every
    request (caches are per context), and building one costs more than the key."""
    config = settings.CACHES["default"]
    make = get_key_func(config.get("KEY_FUNCTION"))
    return make(key, config.get("KEY_PREFIX", ""), config.get("VERSION", 1))
