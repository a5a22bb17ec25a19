"""Circuit breakers (seed 7.3) whose state lives in Redis, shared by every process,
and in this process's memory while Redis cannot be reached."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import pybreaker
from asgiref.sync import sync_to_async
from django.conf import settings
from django_redis import get_redis_connection

from voiceplatform import aredis, outage

T = TypeVar("T")


class _Failure(Exception):
    pass


class FallbackRedisStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's state in Redis (the keys CircuitRedisStorage uses), kept in memory
    instead while Redis is down: a breaker then counts this process's outcomes only,
    and reads Redis again once it answers. pybreaker's own Redis storage answers
    'closed' on every Redis error, forgetting what this process saw."""

    def __init__(self, namespace: str) -> None:
        super().__init__("redis")
        self.namespace = namespace
        self.memory = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)

    def _key(self, name: str) -> str:
        return f"{self.namespace}:pybreaker:{name}"

    def _either(self, on_redis: Callable, on_memory: Callable[[], T]) -> T:
        return outage.redis.either(lambda: on_redis(get_redis_connection("default")), on_memory)

    @property
    def state(self) -> str:
        def on_redis(redis) -> str:
            value = redis.get(self._key("state"))
            return value.decode() if value else pybreaker.STATE_CLOSED

        return self._either(on_redis, lambda: self.memory.state)

    @state.setter
    def state(self, state: str) -> None:
        def on_memory() -> None:
            self.memory.state = state

        self._either(lambda redis: redis.set(self._key("state"), str(state)), on_memory)

    def _count(self, name: str, memory: Callable[[], int]) -> int:
        return self._either(lambda redis: int(redis.get(self._key(name)) or 0), memory)

    @property
    def counter(self) -> int:
        return self._count("fail_counter", lambda: self.memory.counter)

    @property
    def success_counter(self) -> int:
        return self._count("success_counter", lambda: self.memory.success_counter)

    def increment_counter(self) -> None:
        self._either(lambda r: r.incr(self._key("fail_counter")), self.memory.increment_counter)

    def reset_counter(self) -> None:
        self._either(lambda r: r.set(self._key("fail_counter"), 0), self.memory.reset_counter)

    def increment_success_counter(self) -> None:
        self._either(
            lambda r: r.incr(self._key("success_counter")), self.memory.increment_success_counter
        )

    def reset_success_counter(self) -> None:
        self._either(
            lambda r: r.set(self._key("success_counter"), 0), self.memory.reset_success_counter
        )

    @property
    def opened_at(self) -> datetime | None:
        def on_redis(redis) -> datetime | None:
            value = redis.get(self._key("opened_at"))
            return datetime.fromtimestamp(int(value), UTC) if value else None

        return self._either(on_redis, lambda: self.memory.opened_at)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        def on_memory() -> None:
            self.memory.opened_at = now

        self._either(lambda r: r.set(self._key("opened_at"), int(now.timestamp())), on_memory)


@functools.cache
def _breaker(name: str, failures: int, reset_seconds: int) -> pybreaker.CircuitBreaker:
    if settings.REDIS_URL:
        storage = FallbackRedisStorage(f"vp:{name}")
    else:
        storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    return pybreaker.CircuitBreaker(
        fail_max=failures,
        reset_timeout=reset_seconds,
        state_storage=storage,
        name=name,
        exclude=[lambda e: not isinstance(e, _Failure)],
    )


def amplifier() -> pybreaker.CircuitBreaker:
    return _breaker(
        "amplifier", settings.AMPLIFIER_BREAKER_FAILURES, settings.AMPLIFIER_BREAKER_RESET_SECONDS
    )


def record(breaker: pybreaker.CircuitBreaker, ok: bool) -> None:
    """Counts one outcome (blocking: Redis I/O; call from sync code or a thread)."""

    def outcome() -> None:
        if not ok:
            raise _Failure

    with contextlib.suppress(_Failure, pybreaker.CircuitBreakerError):
        breaker.call(outcome)


def is_open(breaker: pybreaker.CircuitBreaker) -> bool:
    """Open and not yet due for a half-open trial (blocking, like record)."""
    if breaker.current_state != pybreaker.STATE_OPEN:
        return False
    opened = breaker._state_storage.opened_at  # noqa: SLF001 (pybreaker has no getter)
    if opened is None:
        return True
    return time.time() - opened.timestamp() < breaker.reset_timeout


# A success while closed resets the failure count (pybreaker's closed state does just
# that); 0 when the breaker is not closed, and pybreaker's own logic must run.
_RESET_IF_CLOSED = """
local state = redis.call('GET', KEYS[1])
if state and state ~= 'closed' then return 0 end
redis.call('SET', KEYS[2], 0)
return 1
"""


async def ais_open(breaker: pybreaker.CircuitBreaker) -> bool:
    """is_open from async code."""
    return await astate_of(breaker) == "open"


@dataclass(frozen=True)
class Reading:
    """A breaker as read before a call through it."""

    state: str
    # Closed with no failure counted: a success after it would change nothing.
    clean: bool

    @property
    def open(self) -> bool:
        return self.state == pybreaker.STATE_OPEN


async def aread(breaker: pybreaker.CircuitBreaker) -> Reading:
    """astate_of, and whether the breaker is clean, in the same single Redis call while
    it is closed: a call that then succeeds needs no arecord (a failure counted between
    the reading and the success stays counted, as if the call had started after it)."""
    storage = breaker._state_storage  # noqa: SLF001 (pybreaker has no getter)
    if not isinstance(storage, FallbackRedisStorage):  # in memory: no I/O
        state = state_of(breaker)
        return Reading(state, clean=state == pybreaker.STATE_CLOSED and not breaker.fail_counter)
    keys = (storage._key("state"), storage._key("fail_counter"))
    found = await aredis.either(lambda redis: redis.mget(keys), lambda: None)
    if found is not None and found[0] in (None, b"closed"):
        return Reading(pybreaker.STATE_CLOSED, clean=not int(found[1] or 0))
    return Reading(await sync_to_async(state_of, thread_sensitive=False)(breaker), clean=False)


async def astate_of(breaker: pybreaker.CircuitBreaker) -> str:
    """state_of from async code. A closed breaker (the usual case) is read on the event
    loop; anything else, and Redis away, goes through pybreaker on a thread."""
    return (await aread(breaker)).state


async def arecord(breaker: pybreaker.CircuitBreaker, ok: bool) -> None:
    """record from async code: a success while closed is one Redis call on the event
    loop; failures, trials and Redis away go through pybreaker on a thread."""
    storage = breaker._state_storage  # noqa: SLF001
    if not isinstance(storage, FallbackRedisStorage):
        record(breaker, ok)  # in memory: no I/O
        return
    if ok:
        keys = (storage._key("state"), storage._key("fail_counter"))
        done = await aredis.either(lambda redis: redis.eval(_RESET_IF_CLOSED, 2, *keys), lambda: 0)
        if done:
            return
    await sync_to_async(record, thread_sensitive=False)(breaker, ok)


def reset(breaker: pybreaker.CircuitBreaker) -> None:
    breaker.close()


def openai() -> pybreaker.CircuitBreaker:
    return _breaker(
        "openai", settings.OPENAI_BREAKER_FAILURES, settings.OPENAI_BREAKER_RESET_SECONDS
    )


def all_breakers() -> dict[str, pybreaker.CircuitBreaker]:
    """Every breaker by the service it guards (the seed's `service` label)."""
    return {"openai": openai(), "amplifier": amplifier()}


def seconds_until_trial(breaker: pybreaker.CircuitBreaker) -> int:
    """How long an open breaker stays shut before it lets a trial call through."""
    opened = breaker._state_storage.opened_at  # noqa: SLF001 (pybreaker has no getter)
    if opened is None:
        return int(breaker.reset_timeout)
    return max(1, int(breaker.reset_timeout - (time.time() - opened.timestamp())) + 1)


def by_name(name: str) -> pybreaker.CircuitBreaker | None:
    return all_breakers().get(name)


def state_of(breaker: pybreaker.CircuitBreaker) -> str:
    """closed, open, or half-open (open but due for a trial call); blocking."""
    if is_open(breaker):
        return "open"
    if breaker.current_state == pybreaker.STATE_OPEN:
        return "half-open"
    return breaker.current_state
