"""Whether this process should try Redis right now: a small circuit shared by the
cache, the circuit breakers' storage and the channel layer.

When a call finds Redis unreachable, each of them serves process-local state instead,
and none tries Redis again for REDIS_RETRY_SECONDS, so a dead Redis costs one request
a failed connection, not every request a timeout. The first call after that tries
again; when it works, the outage is over. Each outage is logged once at its start and
once at its end."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ops_app.metrics import count_error

log = structlog.get_logger(__name__)

T = TypeVar("T")

# What says "Redis is not there" (as opposed to a bad command, which is a bug).
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, socket.timeout, OSError, TimeoutError)


class Outage:
    """One dependency's reachability as this process last found it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0  # outages so far: who keeps state per outage compares this
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def should_try(self) -> bool:
        """Up, or down long enough that it is time to try again."""
        return self._down_since is None or time.monotonic() >= self._retry_at

    def retry_in(self) -> float:
        """Seconds until Redis is tried again (a little, when that is now)."""
        return max(0.05, self._retry_at - time.monotonic())

    def failed(self, exc: BaseException) -> None:
        count_error(self.name, type(exc).__name__)
        with self._lock:
            now = time.monotonic()
            self._retry_at = now + settings.REDIS_RETRY_SECONDS
            if self._down_since is not None:
                return
            self._down_since = now
            self.count += 1
        log.warning(
            f"{self.name}_unreachable",
            error=f"{type(exc).__name__}: {exc}"[:200],
            fallback="process-local state",
            retry_seconds=settings.REDIS_RETRY_SECONDS,
        )

    def succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            seconds = time.monotonic() - self._down_since
            self._down_since = None
        log.warning(f"{self.name}_back", outage_seconds=round(seconds, 1))

    def either(self, on_up: Callable[[], T], on_down: Callable[[], T]) -> T:
        """on_up() while the dependency is up (or due for a retry); on_down() while it is
        down, or when on_up finds it unreachable (which starts an outage)."""
        if self.should_try():
            try:
                result = on_up()
            except Exception as exc:
                self._unless_unreachable(exc)
            else:
                self.succeeded()
                return result
        return on_down()

    async def aeither(self, on_up: Callable[[], Awaitable[T]], on_down: Callable[[], T]) -> T:
        """either, for async on_up."""
        if self.should_try():
            try:
                result = await on_up()
            except Exception as exc:
                self._unless_unreachable(exc)
            else:
                self.succeeded()
                return result
        return on_down()

    def _unless_unreachable(self, exc: Exception) -> None:
        if not is_unreachable(exc):
            raise exc
        self.failed(exc)

    def forget(self) -> None:
        """Back to 'up' without a log line (between tests)."""
        with self._lock:
            self._down_since = None
            self._retry_at = 0.0


redis = Outage("redis")


def is_unreachable(exc: BaseException) -> bool:
    """Whether exc (or what it wraps: django-redis re-raises as ConnectionInterrupted)
    says Redis cannot be reached."""
    while exc is not None:
        if isinstance(exc, UNREACHABLE):
            return True
        exc = exc.__cause__
    return False
