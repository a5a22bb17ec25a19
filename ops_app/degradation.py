"""The service level (seed 7.2): 1 full, 2 reduced, 3 voice only, 4 maintenance."""

from __future__ import annotations

from django.conf import settings

from voiceplatform.errors import ServiceUnavailable

FULL, REDUCED, VOICE_ONLY, MAINTENANCE = 1, 2, 3, 4


async def current_level() -> int:
    # Maintenance is an operator switch; the live checks (workers, breakers, database)
    # that lower the level join here as their parts land.
    if settings.MAINTENANCE_MODE:
        return MAINTENANCE
    return FULL


def refuse_in_maintenance(level: int) -> None:
    if level >= MAINTENANCE:
        raise ServiceUnavailable(
            "Service temporarily unavailable (maintenance).",
            code="maintenance",
            retry_after=settings.MAINTENANCE_RETRY_AFTER_SECONDS,
        )
