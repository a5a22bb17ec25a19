"""/tools: the session's tools, and the browser-relayed door to running one; a
session's background tasks, read and cancelled."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from sessions_app import actions as session_actions
from sessions_app import callers
from tools_app import actions, background
from tools_app.bodies import ToolCallBody
from tools_app.models import Task
from voiceplatform.api import api_view, client_ip, parse_body


@api_view("GET")
async def list_tools(request: HttpRequest) -> JsonResponse:
    session = await callers.session_for_token(request)
    return JsonResponse({"tools": session.tools})


@api_view("POST")
async def run_tool(request: HttpRequest, name: str) -> JsonResponse:
    body = parse_body(request, ToolCallBody)
    session = await callers.session_for_token(request)
    session = await session_actions.expire_if_overdue(session)
    outcome = await actions.run_for_client(
        session, name=name, call_id=body.call_id, arguments=body.arguments, detach=body.detach
    )
    if isinstance(outcome, Task):
        return JsonResponse(outcome.as_started(), status=202)
    return JsonResponse(outcome.as_result())


@api_view("GET")
async def task_detail(request: HttpRequest, session_id: str, task_id: str) -> JsonResponse:
    session = await callers.session_for_token(request, session_id)
    task = await background.find(session, task_id)
    return JsonResponse(task.to_dict())


@api_view("POST")
async def cancel_task(request: HttpRequest, session_id: str, task_id: str) -> JsonResponse:
    session = await callers.session_for_token(request, session_id)
    task = await background.find(session, task_id)
    task = await background.cancel(task, by="caller", ip=client_ip(request))
    return JsonResponse(task.to_dict(), status=202)
