"""Circuit breakers (seed 7.3) whose state lives in Redis, shared by every process."""

from __future__ import annotations

import contextlib
import functools
import time

import pybreaker
from django.conf import settings


class _Failure(Exception):
    pass


@functools.cache
def _breaker(name: str, failures: int, reset_seconds: int) -> pybreaker.CircuitBreaker:
    if settings.REDIS_URL:
        from django_redis import get_redis_connection

        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, get_redis_connection("default"), namespace=f"vp:{name}"
        )
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
