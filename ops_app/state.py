"""The operators' switches as this process sees them: read from the database at most
once a second, so a change made anywhere takes effect everywhere within two."""

from __future__ import annotations

import time

import structlog
from django.conf import settings
from django.db import DatabaseError

from ops_app.models import OpsState

log = structlog.get_logger(__name__)

FRESH_SECONDS = 1.0
_cached: tuple[float, OpsState] | None = None


def _startup_default() -> OpsState:
    """The state before any operator switched anything: MAINTENANCE_MODE and
    MAINTENANCE_ETA from the environment are only this start-up default."""
    return OpsState(
        pk=OpsState.SINGLETON,
        maintenance=settings.MAINTENANCE_MODE,
        maintenance_eta=settings.MAINTENANCE_ETA,
    )


async def current() -> OpsState:
    global _cached
    now = time.monotonic()
    if _cached is not None and now - _cached[0] < FRESH_SECONDS:
        return _cached[1]
    try:
        found = await OpsState.objects.filter(pk=OpsState.SINGLETON).afirst()
    except DatabaseError as exc:
        # The database is down: keep what we knew (or the start-up default).
        log.warning("ops_state_unreadable", error=type(exc).__name__)
        return _cached[1] if _cached is not None else _startup_default()
    state = found or _startup_default()
    _cached = (now, state)
    return state


async def for_update() -> OpsState:
    """The stored row, created from the start-up default the first time."""
    default = _startup_default()
    state, _ = await OpsState.objects.aget_or_create(
        pk=OpsState.SINGLETON,
        defaults={"maintenance": default.maintenance, "maintenance_eta": default.maintenance_eta},
    )
    return state


def forget() -> None:
    """Drops this process's copy (after a change here, and between tests)."""
    global _cached
    _cached = None
