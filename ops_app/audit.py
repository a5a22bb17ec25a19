"""Writing the audit log: one call per security-relevant or operator action."""

from __future__ import annotations

import hashlib
from typing import Any

import structlog
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import DatabaseError

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
    event = AuditEvent(
        action=action,
        actor=user,
        actor_name=(user.get_username() if user else actor_name)[:150],
        target=str(target)[:200],
        ip=ip,
        request_id=str(structlog.contextvars.get_contextvars().get("request_id", ""))[:64],
        details=details or {},
    )
    try:
        event.save(force_insert=True)
    except DatabaseError as exc:
        # The database is away (level 3): the event goes to the log, whole, instead;
        # what was done still happened, and the request must not fail for it.
        log.warning(
            "audit_not_stored",
            action=str(action),
            actor=event.actor_name,
            target=event.target,
            ip=ip,
            details=event.details,
            error=type(exc).__name__,
        )
        return event
    log.info("audit", action=str(action), actor=event.actor_name, target=event.target, ip=ip)
    return event


arecord = sync_to_async(record, thread_sensitive=True)


def record_first(
    action: AuditEvent.Action, key: str, window_seconds: int, *, times: int = 1, **fields: Any
) -> AuditEvent | None:
    """Records only the first `times` events of a kind (action and key) in each window of
    window_seconds, so a flood of them cannot flood the table. Returns the event, or None
    when this one was left out."""
    counter = _counter(action, key)
    # add + incr: atomic in Redis, so concurrent processes agree on who came first.
    cache.add(counter, 0, timeout=window_seconds)
    try:
        count = cache.incr(counter)
    except ValueError:  # the window ended between the two calls: this one opens the next
        cache.add(counter, 1, timeout=window_seconds)
        count = 1
    if count > times:
        return None
    return record(action, **fields)


def forget_first(action: AuditEvent.Action, key: str) -> None:
    """Starts record_first's count for this key afresh (e.g. after a successful login)."""
    cache.delete(_counter(action, key))


def _counter(action: AuditEvent.Action, key: str) -> str:
    # Keys may carry what a caller sent (a username, a tool name): hashed, they stay
    # short and safe for any cache backend.
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"audit:once:{action}:{digest}"


async def record_once_per_window(
    action: AuditEvent.Action, key: str, window_seconds: int, **fields: Any
) -> None:
    """Records the first of a kind of event in each window only (e.g. a tool refused by
    policy, a bad webhook signature)."""
    await sync_to_async(record_first, thread_sensitive=True)(action, key, window_seconds, **fields)


def describe(obj: Any) -> str:
    """A model instance as an audit target: "app.model:pk text"."""
    return f"{obj._meta.label_lower}:{obj.pk} {obj}"
