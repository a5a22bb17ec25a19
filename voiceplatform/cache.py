"""The cache: Redis, and a process-local cache while Redis cannot be reached.

Rate limits, counted slots and the other keys then live in this process only (each
side keeps add and incr atomic: SET NX and INCR in Redis, a lock in local memory), and
go back to Redis by themselves when it answers again (voiceplatform.outage decides
when to try). What was counted locally is dropped then: Redis is the truth."""

from __future__ import annotations

import fnmatch
from typing import Any

from django.core.cache.backends.locmem import LocMemCache
from django_prometheus.cache.backends.redis import RedisCache

from voiceplatform import outage

# Arguments only django-redis understands; the local cache is called without them.
_REDIS_ONLY = ("client", "nx", "xx", "itersize", "prefix")


def _on_either(name: str):
    """A cache method served by Redis, or by the local cache during an outage."""

    def method(self, *args, **kwargs):
        return self._either(name, *args, **kwargs)

    method.__name__ = name
    return method


class FallbackRedisCache(RedisCache):
    """django-redis's RedisCache (django-prometheus's, which counts gets, hits and
    misses) that serves a LocMemCache while Redis is down."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        # Django makes one cache object per thread; the name makes their local
        # storage one per process.
        self._local = LocMemCache(
            f"redis-fallback:{server}",
            {**params, "OPTIONS": {"MAX_ENTRIES": 100_000}},
        )
        self._outage_seen = outage.redis.count

    def _either(self, name: str, *args, **kwargs):
        def on_redis():
            result = getattr(super(FallbackRedisCache, self), name)(*args, **kwargs)
            self._forget_local_after_outage()
            return result

        local = {key: value for key, value in kwargs.items() if key not in _REDIS_ONLY}
        return outage.redis.either(on_redis, lambda: getattr(self._local, name)(*args, **local))

    def _forget_local_after_outage(self) -> None:
        if self._outage_seen != outage.redis.count:
            self._outage_seen = outage.redis.count
            self._local.clear()

    add = _on_either("add")
    get = _on_either("get")
    set = _on_either("set")
    touch = _on_either("touch")
    delete = _on_either("delete")
    get_many = _on_either("get_many")
    set_many = _on_either("set_many")
    delete_many = _on_either("delete_many")
    has_key = _on_either("has_key")
    incr = _on_either("incr")
    decr = _on_either("decr")

    def clear(self) -> None:
        self._local.clear()
        self._either("clear")

    def delete_pattern(self, pattern: str, *args, **kwargs) -> int:
        """Keys matching a glob pattern, in Redis and in the local cache."""
        removed = self._local_delete_pattern(pattern, kwargs.get("version"))
        if not outage.redis.should_try():
            return removed
        try:
            removed += super().delete_pattern(pattern, *args, **kwargs)
        except Exception as exc:
            if not outage.is_unreachable(exc):
                raise
            outage.redis.failed(exc)
        else:
            outage.redis.succeeded()
        return removed

    def _local_delete_pattern(self, pattern: str, version: int | None) -> int:
        full = self._local.make_key(pattern, version=version)
        local = self._local
        with local._lock:  # noqa: SLF001 (LocMemCache has no pattern delete)
            found = [key for key in local._cache if fnmatch.fnmatchcase(key, full)]  # noqa: SLF001
            for key in found:
                local._delete(key)  # noqa: SLF001
        return len(found)

    def close(self, **kwargs) -> None:
        try:
            super().close(**kwargs)
        except Exception as exc:
            if not outage.is_unreachable(exc):
                raise
