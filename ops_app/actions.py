"""What operators do: maintenance on and off, force or release a level, reset a
breaker, cancel a caller's task. Each action changes the shared state once and leaves
one audit event."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import structlog
from asgiref.sync import sync_to_async
from django.utils import timezone

from ops_app import audit, breakers, state
from ops_app.degradation import FULL, VOICE_ONLY
from ops_app.forms import END_REASON_MAX
from ops_app.models import AuditEvent
from sessions_app import actions as session_actions
from sessions_app import journal
from sessions_app.models import SESSION_ID, VoiceSession
from tools_app import background
from tools_app.models import Task
from voiceplatform.errors import BadRequest, ErrorCode, NotFound

log = structlog.get_logger(__name__)

MAX_FORCED_HOURS = 24
ENDING_AT_ONCE = 16
MAINTENANCE_FIELDS = ["maintenance", "maintenance_message", "maintenance_eta", "maintenance_since"]
FORCED_FIELDS = ["forced_level", "forced_reason", "forced_until"]


async def maintenance_on(
    *, actor: Any, message: str = "", eta: str = "", end_live: bool = False, ip: str | None = None
) -> int:
    """Switches maintenance on (new sessions, connections, tools and SIP calls get 503);
    with end_live, live sessions are ended now rather than left to finish. Returns how
    many were ended."""
    ops = await state.for_update()
    ops.maintenance = True
    ops.maintenance_message = message[:300]
    ops.maintenance_eta = eta[:80]
    ops.maintenance_since = timezone.now()
    # Only these fields: an operator forcing a level at the same moment keeps theirs.
    await ops.asave(update_fields=[*MAINTENANCE_FIELDS, "updated_at"])
    state.forget()
    ended = await _end_live_sessions() if end_live else 0
    await _audit(
        AuditEvent.Action.MAINTENANCE_ON,
        actor,
        target="maintenance",
        ip=ip,
        details={
            "message": ops.maintenance_message,
            "eta": ops.maintenance_eta,
            "end_live": end_live,
            "sessions_ended": ended,
        },
    )
    return ended


async def maintenance_off(*, actor: Any, ip: str | None = None) -> None:
    ops = await state.for_update()
    was_on_since = ops.maintenance_since
    ops.maintenance = False
    ops.maintenance_since = None
    await ops.asave(update_fields=[*MAINTENANCE_FIELDS, "updated_at"])
    state.forget()
    await _audit(
        AuditEvent.Action.MAINTENANCE_OFF,
        actor,
        target="maintenance",
        ip=ip,
        details={"was_on_since": was_on_since.isoformat() if was_on_since else None},
    )


async def force_level(
    *, actor: Any, level: int, reason: str, hours: float, ip: str | None = None
) -> None:
    """Holds the service at a level (1 to 3; 4 is maintenance) for a while, whatever the
    live checks say: e.g. level 2 to keep load off a struggling tool backend."""
    if level not in range(FULL, VOICE_ONLY + 1):
        raise BadRequest(
            "A forced level is 1, 2 or 3 (use maintenance for 4).", code=ErrorCode.INVALID_LEVEL
        )
    if not reason.strip():
        raise BadRequest("Say why the level is forced.", code=ErrorCode.INVALID_REASON)
    if not 0 < hours <= MAX_FORCED_HOURS:
        raise BadRequest(
            f"Force a level for up to {MAX_FORCED_HOURS} hours.", code=ErrorCode.INVALID_HOURS
        )
    ops = await state.for_update()
    ops.forced_level = level
    ops.forced_reason = reason.strip()[:200]
    ops.forced_until = timezone.now() + timedelta(hours=hours)
    await ops.asave(update_fields=[*FORCED_FIELDS, "updated_at"])
    state.forget()
    await _audit(
        AuditEvent.Action.LEVEL_FORCED,
        actor,
        target=f"level {level}",
        ip=ip,
        details={
            "level": level,
            "reason": ops.forced_reason,
            "until": ops.forced_until.isoformat(),
        },
    )


async def release_level(*, actor: Any, ip: str | None = None) -> None:
    ops = await state.for_update()
    released = ops.forced_level
    ops.forced_level, ops.forced_reason, ops.forced_until = None, "", None
    await ops.asave(update_fields=[*FORCED_FIELDS, "updated_at"])
    state.forget()
    await _audit(
        AuditEvent.Action.LEVEL_RELEASED,
        actor,
        target=f"level {released}" if released else "level",
        ip=ip,
        details={"released": released},
    )


async def reset_breaker(*, actor: Any, name: str, ip: str | None = None) -> None:
    breaker = breakers.by_name(name)
    if breaker is None:
        raise BadRequest(
            f"There is no breaker named '{name[:40]}'.", code=ErrorCode.UNKNOWN_BREAKER
        )
    before = await sync_to_async(breakers.state_of, thread_sensitive=False)(breaker)
    await sync_to_async(breakers.reset, thread_sensitive=False)(breaker)
    await _audit(
        AuditEvent.Action.BREAKER_RESET,
        actor,
        target=f"breaker {name}",
        ip=ip,
        details={"state_before": before},
    )


async def _end_live_sessions() -> int:
    """Ends every live session, several at a time (each hangs up upstream and lets its
    sideband drain), so a switch with a hundred calls answers in seconds."""
    room = asyncio.Semaphore(ENDING_AT_ONCE)

    async def end(session: VoiceSession) -> None:
        async with room:
            await session_actions.end_session(session, reason=VoiceSession.EndReason.MAINTENANCE)

    live = [s async for s in VoiceSession.objects.filter(status__in=VoiceSession.LIVE_STATUSES)]
    await asyncio.gather(*(end(session) for session in live))
    return len(live)


async def _audit(action: AuditEvent.Action, actor: Any, **fields: Any) -> None:
    """actor: the user who acted, or a name for someone outside the web (e.g. cli:root)."""
    name = actor if isinstance(actor, str) else "system"
    await audit.arecord(action, actor=actor, actor_name=name, **fields)


async def end_call(*, actor: Any, session_id: str, reason: str, ip: str | None = None) -> bool:
    """Ends one live call for a member of staff, with the reason they give: the model
    says a short goodbye when it can, then the call is hung up upstream (end reason
    staff) and the caller's page is told; audited. True when the goodbye was said.
    400 without a reason or with one too long, 404 for an unknown session, 409 for one
    that has ended or is being ended."""
    reason = " ".join(reason.split())
    if not reason:
        raise BadRequest("Say why the call is ended.", code=ErrorCode.INVALID_REASON)
    if len(reason) > END_REASON_MAX:
        raise BadRequest(
            f"Say why in at most {END_REASON_MAX} characters.", code=ErrorCode.INVALID_REASON
        )
    session = await journal.lookup(session_id) if SESSION_ID.fullmatch(session_id) else None
    if session is None:
        raise NotFound(
            f"There is no session {session_id[:40]!r}.", code=ErrorCode.SESSION_NOT_FOUND
        )
    # Once begun it runs to its end and its audit event, whatever becomes of the request
    # (a browser that gave up waiting for the goodbye cancels the view).
    ending = asyncio.ensure_future(_end_call(actor, session, reason, ip))
    _ending.add(ending)
    ending.add_done_callback(_ending.discard)
    return await asyncio.shield(ending)


_ending: set[asyncio.Future] = set()


async def _end_call(actor: Any, session: VoiceSession, reason: str, ip: str | None) -> bool:
    said = await session_actions.end_for_staff(session)
    await _audit(
        AuditEvent.Action.CALL_ENDED,
        actor,
        target=audit.describe(session),
        ip=ip,
        details={"reason": reason, "goodbye_said": said, "call_id": session.call_id or ""},
    )
    return said


# What a task id can be (tools_app.models.new_task_id); anything else is no task, and
# is never sent to the database (a NUL would fail there).
_TASK_ID = re.compile(r"[\w-]{1,40}", re.ASCII)


async def cancel_task(*, actor: Any, task_id: str, ip: str | None = None) -> Task:
    """Stops a caller's running task, whichever session it is in (gracefully, then by
    force: tools_app.background.cancel, which audits it with the operator as actor).
    404 for an unknown task; 409 for one that finished or is being cancelled already."""
    task = None
    if _TASK_ID.fullmatch(task_id):
        task = await Task.objects.select_related("execution").filter(pk=task_id).afirst()
    if task is None:
        raise NotFound(f"There is no task {task_id[:40]!r}.", code=ErrorCode.UNKNOWN_TASK)
    return await background.cancel(task, by=actor.get_username(), actor=actor, ip=ip)
