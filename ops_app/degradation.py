"""The service level (seed 7.2): 1 full, 2 reduced, 3 voice only, 4 maintenance."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from ops_app import health, state
from voiceplatform.errors import ErrorCode, ServiceUnavailable

FULL, REDUCED, VOICE_ONLY, MAINTENANCE = 1, 2, 3, 4

NO_TOOLS_MESSAGE = "I can't execute tasks right now, but I can still help with questions."


LEVEL_NAMES = {
    FULL: "full",
    REDUCED: "reduced",
    VOICE_ONLY: "voice only",
    MAINTENANCE: "maintenance",
}
HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
BREAKER_STATES = ("closed", "open", "half-open")


@dataclass(frozen=True)
class ServiceState:
    """The one answer to "how is the service": /health, /ops/, the level metric and
    /session all read it, so they cannot disagree. status: healthy, degraded (something
    is down, new conversations still work) or unhealthy (the OpenAI breaker is open:
    new conversations cannot start)."""

    status: str
    level: int
    reasons: list[str]
    checks: dict[str, health.Check]

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES[self.level]

    @property
    def breakers(self) -> dict[str, str]:
        """closed, open, half-open (or unknown: not read in time), by the service each
        guards."""
        return {
            name: detail
            if (detail := self.checks[f"{name}_breaker"].detail) in BREAKER_STATES
            else "unknown"
            for name in ("openai", "amplifier")
        }


async def current(*, probe: bool = False) -> ServiceState:
    """The service's state now. Breakers are read fresh; the other checks are what the
    last probe found (request paths never wait on a probe) unless probe is on, which
    waits for a first answer (/health, /ops/)."""
    checks = await health.run_all(wait=probe, only=None if probe else _LEVEL_CHECKS)
    level, reasons = await _level(checks)
    if checks["openai_breaker"].status == health.FAILING:
        status = UNHEALTHY
        reasons = [*reasons, "OpenAI breaker open: new conversations are refused until it closes"]
    elif level > FULL or any(c.status in (health.FAILING, health.WARNING) for c in checks.values()):
        status = DEGRADED
        reasons = [*reasons, *_failing(checks)]
    else:
        status = HEALTHY
    return ServiceState(status, level, reasons or ["all checks pass"], checks)


async def _level(checks: dict[str, health.Check]) -> tuple[int, list[str]]:
    """The level and why: maintenance (an operator switch), a level an operator forced,
    or what the checks found."""
    ops = await state.current()
    if ops.maintenance:
        return MAINTENANCE, ["maintenance mode is on"]
    forced = ops.forced_level_now()
    if forced is not None:
        return forced, [f"forced by an operator: {ops.forced_reason or 'no reason given'}"]
    reasons, level = [], FULL
    if not checks["database"].ok:
        level = VOICE_ONLY
        reasons.append("database unreachable: history is buffered until it returns")
    if not checks["amplifier_breaker"].ok or not checks["workers"].ok:
        level = max(level, REDUCED)
        reasons.append("tools unavailable: breaker open or no worker answers")
    return level, reasons


# What the level and status are made of: request paths probe only these.
_LEVEL_CHECKS = frozenset({"database", "workers", "openai_breaker", "amplifier_breaker"})
# What the level alone is made of (_level reads these).
_LEVEL_INPUTS = ("database", "workers", "amplifier_breaker")


def _failing(checks: dict[str, health.Check]) -> list[str]:
    """What else is wrong, in a few words each (the levels' own reasons say the rest)."""
    return [
        f"{name.replace('_', ' ')}: {check.detail or check.status}"
        for name, check in checks.items()
        if name not in _LEVEL_CHECKS and check.status in (health.FAILING, health.WARNING)
    ]


async def current_level() -> int:
    """current().level, for request paths: reads only what the level is made of (the
    database and the workers as last probed, the Amplifier breaker now), not the OpenAI
    breaker, which changes the status alone, nor the other checks."""
    checks = {name: await health.check(name, wait=False) for name in _LEVEL_INPUTS}
    return (await _level(checks))[0]


async def refuse_in_maintenance(level: int) -> None:
    """503 in maintenance, saying what the operator said and when service should be back
    (a page left open before maintenance began shows it)."""
    if level >= MAINTENANCE:
        ops = await state.current()
        raise ServiceUnavailable(
            ops.maintenance_notice(),
            code=ErrorCode.MAINTENANCE,
            retry_after=settings.MAINTENANCE_RETRY_AFTER_SECONDS,
        )


async def refuse_tools(level: int) -> None:
    """/tools/* answers 503 below full service."""
    await refuse_in_maintenance(level)
    if level >= REDUCED:
        raise ServiceUnavailable(
            NO_TOOLS_MESSAGE,
            code=ErrorCode.TOOLS_UNAVAILABLE,
            retry_after=settings.AMPLIFIER_BREAKER_RESET_SECONDS,
        )
