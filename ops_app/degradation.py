"""The service level (seed 7.2): 1 full, 2 reduced, 3 voice only, 4 maintenance."""

from __future__ import annotations

from django.conf import settings

from ops_app import breakers, health, state
from voiceplatform.errors import ErrorCode, ServiceUnavailable

FULL, REDUCED, VOICE_ONLY, MAINTENANCE = 1, 2, 3, 4

NO_TOOLS_MESSAGE = "I can't execute tasks right now, but I can still help with questions."


async def tools_available() -> bool:
    """The tools breaker is closed (read fresh: it opens on the failure that trips it)
    and a worker answers (the last probe's answer: probing waits for replies)."""
    if await breakers.ais_open(breakers.amplifier()):
        return False
    return (await health.check("workers", wait=False)).ok


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
    reasons, level = [], FULL
    if not (await health.check("database", wait=False)).ok:
        level = VOICE_ONLY
        reasons.append("database unreachable: history is buffered until it returns")
    if not await tools_available():
        level = max(level, REDUCED)
        reasons.append("tools unavailable: breaker open or no worker answers")
    return level, reasons or ["all checks pass"]


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
