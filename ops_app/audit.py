"""Writing the audit log: one call per security-relevant or operator action."""

from __future__ import annotations

from typing import Any

import structlog
from asgiref.sync import sync_to_async
from django.core.cache import cache

from ops_app.models import AuditEvent

log = structlog.get_logger(__name__)

Action = AuditEvent.Action


def record(
    action: AuditEvent.Action,
    *,
    actor: Any = None,
    actor_name: str = "",
    target: str = "",
    ip: str | None = None,
    details: dict | None = None,
) -> AuditEvent:
    """Appends one event. actor is a user (or None for the system / an anonymous
    caller, then described by actor_name); the request id comes from the log context."""
    user = actor if getattr(actor, "is_authenticated", False) else None
    event = AuditEvent.objects.create(
        action=action,
        actor=user,
        actor_name=(user.get_username() if user else actor_name)[:150],
        target=str(target)[:200],
        ip=ip,
        request_id=str(structlog.contextvars.get_contextvars().get("request_id", ""))[:64],
        details=details or {},
    )
    log.info("audit", action=str(action), actor=event.actor_name, target=event.target)
    return event


arecord = sync_to_async(record, thread_sensitive=True)


async def record_once_per_window(
    action: AuditEvent.Action, key: str, window_seconds: int, **fields: Any
) -> None:
    """Records the first of a kind of event in each window only (e.g. rate-limit
    refusals), so a flood of them cannot flood the table."""
    if await cache.aadd(f"audit:once:{action}:{key}", 1, timeout=window_seconds):
        await arecord(action, **fields)
