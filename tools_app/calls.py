"""The sideband's door: a function call the model made, answered with the tool's output."""

from __future__ import annotations

from django.conf import settings

from ops_app import degradation
from sessions_app.models import VoiceSession
from tools_app import actions, registry
from voiceplatform.api import parse_json
from voiceplatform.errors import ApiError, BadRequest


async def output_for_model(session_id: str, item: dict) -> str:
    """Runs the call through the same path as /tools/<name>; returns what the model
    should hear, including a clear reason when the call cannot run."""
    session = await VoiceSession.objects.aget(pk=session_id)
    if not session.is_live:
        return "Error: this conversation has ended."
    name, call_id = item.get("name"), item.get("call_id")
    if not isinstance(call_id, str) or not 0 < len(call_id) <= 80:
        return "Error: the function call has no usable call_id."
    spec = registry.get(name) if isinstance(name, str) else None
    if spec is None or name not in {tool["name"] for tool in session.tools}:
        return f"Error: the tool '{str(name)[:80]}' is not available in this conversation."
    raw = item.get("arguments") or "{}"
    try:
        arguments = parse_json(raw) if isinstance(raw, str) else None
    except BadRequest:
        arguments = None
    if arguments is None:
        return "Error: the arguments were not valid JSON."
    if problem := spec.problem_with(arguments):
        return f"Error: invalid arguments: {problem}"
    if await degradation.current_level() != degradation.FULL:
        return degradation.NO_TOOLS_MESSAGE
    try:
        execution, created = await actions.submit(
            session, call_id=call_id, tool=name, arguments=arguments, origin="sideband"
        )
    except ApiError as exc:  # a reused call_id, tools that cannot be queued
        return f"Error: {exc.message}"
    execution = await actions.wait_for(execution, settings.TOOL_TIMEOUT_SECONDS)
    if created:
        actions.observe(execution)
    if not execution.is_finished:
        return "Error: the tool did not finish in time."
    if execution.status == execution.Status.FAILED:
        return f"Error: {execution.output}"
    return execution.output
