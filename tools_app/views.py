"""/tools: the session's tools, and the browser-relayed door to running one."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from sessions_app import actions as session_actions
from sessions_app import callers
from tools_app import actions
from tools_app.bodies import ToolCallBody
from voiceplatform.api import api_view, parse_body


@api_view("GET")
async def list_tools(request: HttpRequest) -> JsonResponse:
    session = await callers.session_for_token(request)
    return JsonResponse({"tools": session.tools})


@api_view("POST")
async def run_tool(request: HttpRequest, name: str) -> JsonResponse:
    body = parse_body(request, ToolCallBody)
    session = await callers.session_for_token(request)
    session = await session_actions.expire_if_overdue(session)
    execution = await actions.run_for_client(
        session, name=name, call_id=body.call_id, arguments=body.arguments
    )
    return JsonResponse(execution.as_result())
