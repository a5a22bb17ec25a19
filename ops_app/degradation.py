"""The service level (seed 7.2): 1 full, 2 reduced, 3 voice only, 4 maintenance."""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from ops_app import breakers, state
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


LEVEL_NAMES = {
    FULL: "full",
    REDUCED: "reduced",
    VOICE_ONLY: "voice only",
    MAINTENANCE: "maintenance",
}


async def explain() -> tuple[int, list[str]]:
    """The service level and why: maintenance (an operator switch), a level an operator
    forced, or what the live checks found."""
    ops = await state.current()
    if ops.maintenance:
        return MAINTENANCE, ["maintenance mode is on"]
    forced = ops.forced_level_now()
    if forced is not None:
        return forced, [f"forced by an operator: {ops.forced_reason or 'no reason given'}"]
    if not await tools_available():
        return REDUCED, ["tools unavailable: breaker open or no worker answers"]
    return FULL, ["all checks pass"]


async def current_level() -> int:
    level, _ = await explain()
    return level


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
