"""POST /tools/<name>: the browser-relayed door to tool execution."""

from __future__ import annotations

import asyncio

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from ops_app import degradation
from sessions_app import actions as session_actions
from sessions_app import callers
from tools_app import actions, registry
from tools_app.models import ToolExecution
from voiceplatform.api import api_view, json_object
from voiceplatform.errors import BadRequest, Conflict, Forbidden, NotFound


@api_view("POST")
async def run_tool(request: HttpRequest, name: str) -> JsonResponse:
    body = json_object(request, allowed={"call_id", "arguments"}, required={"call_id", "arguments"})
    call_id, arguments = body["call_id"], body["arguments"]
    if not isinstance(call_id, str) or not 0 < len(call_id) <= 80:
        raise BadRequest("call_id must be a string of 1 to 80 characters.", code="invalid_call_id")
    session = await callers.session_for_token(request)
    session = await session_actions.expire_if_overdue(session)
    session_actions.require_live(session)
    spec = registry.get(name)
    if spec is None:
        raise NotFound(f"There is no tool named '{name}'.", code="unknown_tool")
    if name not in {tool["name"] for tool in session.tools}:
        raise Forbidden(
            f"The tool '{name}' is not allowed in this session.", code="tool_not_allowed"
        )
    degradation.refuse_tools(await degradation.current_level())
    if problem := spec.problem_with(arguments):
        raise BadRequest(f"Invalid arguments for {name}: {problem}", code="invalid_arguments")
    if session.sideband_connected:
        # The server sees the call itself; the browser may only ask for its result.
        seen = await _seen_by_sideband(session, call_id)
        if seen is None or seen.tool != name or seen.arguments != arguments:
            raise Conflict(
                "This call was not made by the model on this session's call.", code="unknown_call"
            )
    execution, created = await actions.submit(
        session, call_id=call_id, tool=name, arguments=arguments, origin="client"
    )
    execution = await actions.wait_for(execution, settings.TOOL_TIMEOUT_SECONDS)
    if created:
        actions.observe(execution)
    return JsonResponse(execution.as_result())


async def _seen_by_sideband(session, call_id: str, patience: float = 2.0):
    """The execution the sideband made for call_id; the browser may see the model's
    call a moment before the sideband has recorded it."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        seen = await ToolExecution.objects.filter(session=session, call_id=call_id).afirst()
        if seen is not None or asyncio.get_running_loop().time() > deadline:
            return seen
        await asyncio.sleep(0.05)
