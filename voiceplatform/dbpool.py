"""Telling a busy database pool from a database that is away.

Waiting longer than DB_POOL_TIMEOUT_SECONDS for a pooled connection raises the same
OperationalError as a database that cannot be reached. When every connection the pool
may hold is open and lent out, the database answers and this process is merely busy:
the request is refused with 503 and a short Retry-After, and nothing switches to the
level-3 journal. When the pool could not even open its connections, the database is
away."""

from __future__ import annotations

from django.db import connections
from psycopg_pool import PoolTimeout

from voiceplatform.errors import ServiceUnavailable

RETRY_AFTER_SECONDS = 1


def _timed_out_waiting(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, PoolTimeout):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _pool():
    return getattr(connections["default"], "pool", None)


def exhausted(exc: BaseException) -> bool:
    """exc is a wait for a pooled connection that timed out while the pool was full."""
    if not _timed_out_waiting(exc):
        return False
    pool = _pool()
    if pool is None:
        return False
    stats = pool.get_stats()
    return stats.get("pool_size", 0) >= pool.max_size and not stats.get("pool_available", 0)


def busy() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The server is busy; try again in a moment.", retry_after=RETRY_AFTER_SECONDS
    )
