"""The service level (seed 7.2): 1 full, 2 reduced, 3 voice only, 4 maintenance."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from ops_app import breakers
from voiceplatform.errors import ServiceUnavailable

FULL, REDUCED, VOICE_ONLY, MAINTENANCE = 1, 2, 3, 4

NO_TOOLS_MESSAGE = "I can't execute tasks right now, but I can still help with questions."


def _workers_alive() -> bool:
    """Whether a Celery worker consuming our task queue answers (blocking; cached 10 s)."""
    from voiceplatform.celery import app

    if app.conf.task_always_eager:
        return True
    cached = cache.get("ops:workers_alive")
    if cached is not None:
        return cached
    queue = app.conf.task_default_queue
    try:
        replies = app.control.inspect(timeout=settings.WORKER_PING_TIMEOUT_SECONDS)
        consuming = replies.active_queues() or {}
        alive = any(q.get("name") == queue for queues in consuming.values() for q in queues)
    except Exception:  # the broker itself is unreachable
        alive = False
    cache.set("ops:workers_alive", alive, timeout=10)
    return alive


def _tools_available() -> bool:
    return not breakers.is_open(breakers.amplifier()) and _workers_alive()


async def tools_available() -> bool:
    return await sync_to_async(_tools_available, thread_sensitive=False)()


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
            code="maintenance",
            retry_after=settings.MAINTENANCE_RETRY_AFTER_SECONDS,
        )


def refuse_tools(level: int) -> None:
    """/tools/* answers 503 below full service."""
    refuse_in_maintenance(level)
    if level >= REDUCED:
        raise ServiceUnavailable(
            NO_TOOLS_MESSAGE,
            code="tools_unavailable",
            retry_after=settings.AMPLIFIER_BREAKER_RESET_SECONDS,
        )
