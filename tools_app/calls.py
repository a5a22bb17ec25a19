"""The one check a tool call passes before it runs, whichever door it came through
(the server's sideband seeing the model's call, or POST /tools/<name>). It raises
typed API errors: HTTP renders them, the sideband tells the model their message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from ops_app import audit, degradation
from ops_app.models import AuditEvent
from sessions_app.models import VoiceSession
from tools_app import registry
from voiceplatform.api import parse_json
from voiceplatform.errors import (
    BadRequest,
    Conflict,
    ErrorCode,
    Forbidden,
    NotFound,
    PayloadTooLarge,
)

MAX_CALL_ID = 80


@dataclass(frozen=True)
class ToolCall:
    session: VoiceSession
    name: str
    call_id: str
    arguments: dict[str, Any]
    long_running: bool = False  # its tool is declared so (a task from the start)

    @property
    def arguments_bytes(self) -> int:
        return arguments_size(self.arguments)


def arguments_size(arguments: Any) -> int:
    """What arguments weigh: compact JSON in UTF-8, however the caller spaced them."""
    return len(json.dumps(arguments, ensure_ascii=False, separators=(",", ":")).encode())


async def check_call(session: VoiceSession, *, name: Any, call_id: Any, arguments: Any) -> ToolCall:
    """The call, if this session may make it now; otherwise the reason, in this order:
    409 ended, 400 call_id, 404 unknown tool, 503 voice only (level 3 or 4), 403 not this
    session's, 503 degraded, 413 arguments over TOOL_ARGUMENTS_MAX_BYTES,
    400 arguments that break the tool's schema."""
    if not session.is_live:
        raise Conflict(f"The session has {session.status}.", code=ErrorCode.SESSION_ENDED)
    if not isinstance(call_id, str) or not 0 < len(call_id) <= MAX_CALL_ID:
        raise BadRequest(
            f"call_id must be a string of 1 to {MAX_CALL_ID} characters.",
            code=ErrorCode.INVALID_CALL_ID,
        )
    spec = registry.get(name) if isinstance(name, str) else None
    if spec is None:
        await _audit_refusal(session, name, call_id, ErrorCode.UNKNOWN_TOOL)
        raise NotFound(f"There is no tool named '{str(name)[:80]}'.", code=ErrorCode.UNKNOWN_TOOL)
    level = await degradation.current_level()
    if level >= degradation.VOICE_ONLY:
        # Voice only: no tool runs, whatever the session was given.
        await degradation.refuse_tools(level)
    if name not in {tool["name"] for tool in session.tools}:
        await _audit_refusal(session, name, call_id, ErrorCode.TOOL_NOT_ALLOWED)
        raise Forbidden(
            f"The tool '{name}' is not allowed in this session.", code=ErrorCode.TOOL_NOT_ALLOWED
        )
    await degradation.refuse_tools(level)
    # Before the schema: a huge body is refused for its size, not walked.
    size = arguments_size(arguments)
    if size > settings.TOOL_ARGUMENTS_MAX_BYTES:
        raise PayloadTooLarge(
            f"The arguments are {size} bytes; a tool call may send at most "
            f"{settings.TOOL_ARGUMENTS_MAX_BYTES}.",
            code=ErrorCode.ARGUMENTS_TOO_LARGE,
        )
    if problem := spec.problem_with(arguments):
        raise BadRequest(
            f"Invalid arguments for {name}: {problem}", code=ErrorCode.INVALID_ARGUMENTS
        )
    return ToolCall(
        session=session,
        name=name,
        call_id=call_id,
        arguments=arguments,
        long_running=spec.long_running,
    )


async def _audit_refusal(session: VoiceSession, name: Any, call_id: str, code: ErrorCode) -> None:
    # Once per session and tool in a window: a client (or model) looping on a refused
    # call must not flood the table.
    tool = str(name)[:80]
    await audit.record_once_per_window(
        AuditEvent.Action.TOOL_REFUSED,
        f"{session.pk}\0{tool}",
        settings.AUDIT_REFUSAL_WINDOW_SECONDS,
        actor_name=session.attribution,
        target=f"session {session.pk}",
        ip=session.client_ip,
        details={"tool": tool, "call_id": call_id, "code": str(code)},
    )


def arguments_of(item: dict) -> Any:
    """The arguments of the model's function_call item (a JSON string)."""
    raw = item.get("arguments") or "{}"
    if not isinstance(raw, str):
        raise BadRequest("The arguments were not valid JSON.", code=ErrorCode.INVALID_ARGUMENTS)
    try:
        return parse_json(raw)
    except BadRequest:
        raise BadRequest(
            "The arguments were not valid JSON.", code=ErrorCode.INVALID_ARGUMENTS
        ) from None
