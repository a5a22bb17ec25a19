"""task_status and cancel_task: the model asks how its background tasks are going, and
stops one ("stop that")."""

from __future__ import annotations

from amplifier_core import ToolResult
from django.utils import timezone

from tools_app import background
from tools_app.builtin.base import WorkspaceTool, failure
from tools_app.models import Task
from voiceplatform.errors import Conflict

TASK_ID = {
    "type": "string",
    "maxLength": 40,
    "description": "The task's id, as its start said (default: the latest running one).",
}
NAMES_A_TASK = {"type": "object", "properties": {"task_id": TASK_ID}, "additionalProperties": False}


def _describe(task) -> str:
    now = timezone.now()
    seconds = int(((task.finished_at or now) - task.created_at).total_seconds())
    line = f"{task.pk} ({task.summary or task.tool}): {task.status}, {seconds} s"
    if task.status == "running" and task.progress:
        line += f"; latest: {task.progress}"
    elif task.status != "running":
        line += f"; result: {(task.output or task.error)[:300]}"
    return line


class TaskStatusTool(WorkspaceTool):
    name = "task_status"
    description = (
        "How this conversation's background tasks are going: each one's status, time so "
        "far and latest progress (or its result when done)."
    )
    input_schema = NAMES_A_TASK

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        tasks = Task.objects.filter(session_id=self.session_id).order_by("-created_at")
        if input.get("task_id"):
            tasks = tasks.filter(pk=input["task_id"])
        found = [task async for task in tasks[:10]]
        if not found:
            return failure("not_found", "There is no such background task in this conversation.")
        return ToolResult(success=True, output="\n".join(_describe(task) for task in found))


class CancelTaskTool(WorkspaceTool):
    name = "cancel_task"
    description = (
        "Stop one of this conversation's background tasks (the latest running one unless "
        "a task_id is given). You will be told when it has stopped."
    )
    input_schema = NAMES_A_TASK

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        tasks = Task.objects.filter(session_id=self.session_id).select_related("execution")
        if input.get("task_id"):
            task = await tasks.filter(pk=input["task_id"]).afirst()
        else:
            task = await tasks.running().order_by("-created_at").afirst()
        if task is None:
            return failure("not_found", "There is no such running task in this conversation.")
        try:
            task = await background.cancel(task, by="model")
        except Conflict as exc:
            return failure("task_finished", exc.message)
        return ToolResult(success=True, output=f"Stopping task {task.pk}; it is being cancelled.")
