"""The sideband's door: a function call the model made, answered with the tool's output."""

from __future__ import annotations

import json

from django.conf import settings

from ops_app import degradation
from sessions_app.models import VoiceSession
from tools_app import actions, registry


async def output_for_model(session_id: str, item: dict) -> str:
    """Runs the call through the same path as /tools/<name>; returns what the model
    should hear, including a clear reason when the call cannot run."""
    session = await VoiceSession.objects.aget(pk=session_id)
    name, call_id = str(item.get("name") or ""), str(item.get("call_id") or "")
    spec = registry.get(name)
    if spec is None or name not in {tool["name"] for tool in session.tools}:
        return f"Error: the tool '{name}' is not available in this conversation."
    try:
        arguments = json.loads(item.get("arguments") or "{}")
    except ValueError:
        return "Error: the arguments were not valid JSON."
    if problem := spec.problem_with(arguments):
        return f"Error: invalid arguments: {problem}"
    if await degradation.current_level() != degradation.FULL:
        return degradation.NO_TOOLS_MESSAGE
    execution, created = await actions.submit(
        session, call_id=call_id, tool=name, arguments=arguments, origin="sideband"
    )
    execution = await actions.wait_for(execution, settings.TOOL_TIMEOUT_SECONDS)
    if created:
        actions.observe(execution)
    if not execution.is_finished:
        return "Error: the tool did not finish in time."
    if execution.status == execution.Status.FAILED:
        return f"Error: {execution.output}"
    return execution.output
