"""The service level (seed 7.2): 1 full, 2 reduced, 3 voice only, 4 maintenance."""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from ops_app import breakers
from voiceplatform.celery import app
from voiceplatform.errors import ErrorCode, ServiceUnavailable

FULL, REDUCED, VOICE_ONLY, MAINTENANCE = 1, 2, 3, 4

NO_TOOLS_MESSAGE = "I can't execute tasks right now, but I can still help with questions."


WORKERS_KEY = "ops:workers"
WORKERS_FRESH_SECONDS = 10
_refresh: asyncio.Task | None = None


def _probe_workers() -> bool:
    """Whether a Celery worker consuming our task queue answers (blocking: it waits
    the whole timeout for replies, so it never runs on a request's path)."""
    queue = app.conf.task_default_queue
    try:
        replies = app.control.inspect(timeout=settings.WORKER_PING_TIMEOUT_SECONDS)
        consuming = replies.active_queues() or {}
    except Exception:  # the broker itself is unreachable
        return False
    return any(q.get("name") == queue for queues in consuming.values() for q in queues)


async def refresh_workers() -> bool:
    alive = await sync_to_async(_probe_workers, thread_sensitive=False)()
    await cache.aset(WORKERS_KEY, {"alive": alive, "at": time.time()}, timeout=300)
    return alive


async def workers_alive() -> bool:
    """The last known answer, refreshed in the background when older than 10 s; until
    the first probe answers, workers are taken to be there."""
    global _refresh
    if app.conf.task_always_eager:
        return True
    known = await cache.aget(WORKERS_KEY)
    stale = known is None or time.time() - known["at"] > WORKERS_FRESH_SECONDS
    running = _refresh is not None and not _refresh.done()
    if stale and not (running and _refresh.get_loop() is asyncio.get_running_loop()):
        _refresh = asyncio.create_task(refresh_workers())
    return True if known is None else known["alive"]


async def tools_available() -> bool:
    breaker_open = await sync_to_async(breakers.is_open, thread_sensitive=False)(
        breakers.amplifier()
    )
    return not breaker_open and await workers_alive()


async def current_level() -> int:
    # Maintenance is an operator switch; live checks (database, OpenAI breaker) join
    # here as the operations work lands.
    if settings.MAINTENANCE_MODE:
        return MAINTENANCE
    if not await tools_available():
        return REDUCED
    return FULL


def refuse_in_maintenance(level: int) -> None:
    if level >= MAINTENANCE:
        raise ServiceUnavailable(
            "Service temporarily unavailable (maintenance).",
            code=ErrorCode.MAINTENANCE,
            retry_after=settings.MAINTENANCE_RETRY_AFTER_SECONDS,
        )


def refuse_tools(level: int) -> None:
    """/tools/* answers 503 below full service."""
    refuse_in_maintenance(level)
    if level >= REDUCED:
        raise ServiceUnavailable(
            NO_TOOLS_MESSAGE,
            code=ErrorCode.TOOLS_UNAVAILABLE,
            retry_after=settings.AMPLIFIER_BREAKER_RESET_SECONDS,
        )
