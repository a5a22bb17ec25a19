"""Tasks: tool calls that go on in the background while the conversation does.

A call becomes a task when its tool is declared long-running (agents, TASK_TOOLS, a
caller's `"detach": true`) or when it has not finished within TASK_DETACH_AFTER_SECONDS.
The model then hears at once that it started, and, when it ends, the process holding the
call's sideband tells it how (deliver): after the model's current response, exactly once
(a conditional update claims each delivery), whichever process holds the call by then.
A task of a call that has ended is kept on the session and shown, not spoken.

Both sides may see a task end: the worker finishing its execution, and the door that
made it a task a moment after the worker finished. `complete` is conditional on the task
still running, so whichever comes first completes it and the other changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal

import structlog
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from ops_app import audit
from ops_app.metrics import voice_task_duration_seconds, voice_task_total
from sessions_app import events
from sessions_app.models import VoiceSession
from tools_app.agents.runner import AgentHooks
from tools_app.models import Task, ToolExecution
from voiceplatform import syncloop
from voiceplatform.errors import Conflict, ErrorCode, NotFound
from voiceplatform.redaction import redact, storable

log = structlog.get_logger(__name__)

# What a delivered result may say to the model (the rest is on the session's page).
SPOKEN_OUTPUT_CHARS = 2000
# Progress lines are written to the task and its page at most this often.
PROGRESS_EVERY_SECONDS = 1.0


def nudge_group(session_id: str) -> str:
    """The channel-layer group of the process holding the call: told when a task of
    the session ends, so it delivers without polling."""
    return f"tasks.{session_id}"


def detaches_at_once(name: str, *, long_running: bool, asked: bool = False) -> bool:
    """Whether a call of this tool is a task from the start: declared long-running,
    named in TASK_TOOLS, or asked to by its caller."""
    return asked or long_running or name in settings.TASK_TOOLS


def started_message(task: Task) -> str:
    """What the model hears the moment a call becomes a task."""
    return (
        f"Started task {task.pk} ({task.summary or task.tool}). It runs in the background: "
        "you'll be told when it finishes. Carry on with the conversation meanwhile; the "
        "user may ask how it is going (task_status) or to stop it (cancel_task)."
    )


def summary_of(tool: str, arguments: object) -> str:
    """A short line saying what a task is, for its card and the model."""
    if isinstance(arguments, dict):
        for key in ("instruction", "command", "query", "url", "file_path"):
            value = arguments.get(key)
            if isinstance(value, str) and value:
                agent = arguments.get("agent")
                head = f"{agent}: " if tool == "delegate" and isinstance(agent, str) else ""
                return f"{tool} — {head}{' '.join(value.split())}"[:200]
    return tool


async def detach(execution: ToolExecution) -> Task:
    """Makes a running call a task (once per call: a second door finds the first's),
    and completes it at once when its worker has finished meanwhile."""
    task, created = await Task.objects.aget_or_create(
        execution=execution, defaults=_task_fields(execution)
    )
    task.execution = execution  # found, not made (the worker of a long-running call made it)
    if created:
        await events.publish(execution.session_id, events.LiveEvent.TASK_UPDATE, **task.to_dict())
        log.info("task_started", task=task.pk, tool=task.tool)
    fresh = await ToolExecution.objects.aget(pk=execution.pk)
    if fresh.is_finished:
        await sync_to_async(complete)(fresh)
        task = await Task.objects.select_related("execution").aget(pk=task.pk)
    return task


def task_for_worker(execution: ToolExecution) -> Task:
    """The task of a long-running call, made by the worker that runs it when the door
    has not made it yet (its steps need a task to belong to)."""
    task, _ = Task.objects.get_or_create(execution=execution, defaults=_task_fields(execution))
    return task


def _task_fields(execution: ToolExecution) -> dict:
    agent = ""
    if execution.tool == "delegate" and isinstance(execution.arguments, dict):
        agent = str(execution.arguments.get("agent") or "")[:80]
    return {
        "session_id": execution.session_id,
        "tool": execution.tool,
        "kind": Task.Kind.AGENT if agent else Task.Kind.TOOL,
        "agent": agent,
        "summary": summary_of(execution.tool, execution.arguments),
    }


def complete(execution: ToolExecution) -> Task | None:
    """Records how the task of a finished execution ended, once; tells its page, and
    the process holding its call so the model hears it. None when it has no task or it
    was completed already (one read for a call that is no task)."""
    task = (
        Task.objects.filter(execution_id=execution.pk, status=Task.Status.RUNNING)
        .select_related("session")
        .first()
    )
    if task is None:
        return None
    now = timezone.now()
    if task.cancel_requested_at is not None:
        status = Task.Status.CANCELLED
    elif execution.status == ToolExecution.Status.SUCCEEDED:
        status = Task.Status.SUCCEEDED
    else:
        status = Task.Status.FAILED
    ended = task.session.ended_at is not None
    updated = Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING).update(
        status=status,
        output=execution.output,
        error=execution.error,
        finished_at=now,
        updated_at=now,
        delivery=Task.Delivery.KEPT if ended else Task.Delivery.PENDING,
    )
    if not updated:
        return None
    task = Task.objects.select_related("execution").get(pk=task.pk)
    voice_task_total.labels(kind=task.kind, status=task.status).inc()
    voice_task_duration_seconds.labels(kind=task.kind).observe(
        (now - task.created_at).total_seconds()
    )
    syncloop.from_sync(_announce)(task)
    log.info("task_finished", task=task.pk, status=task.status)
    return task


async def _announce(task: Task) -> None:
    await events.publish(task.session_id, events.LiveEvent.TASK_UPDATE, **task.to_dict())
    layer = get_channel_layer()
    if layer is not None and task.delivery == Task.Delivery.PENDING:
        try:
            await layer.group_send(nudge_group(task.session_id), {"type": "task.ended"})
        except Exception as exc:  # the holder's own check finds it later
            log.warning("task_nudge_not_sent", error=type(exc).__name__)


async def find(session: VoiceSession, task_id: str) -> Task:
    """The session's task, or 404 (another session's task is unknown here)."""
    try:
        return await Task.objects.select_related("execution").aget(pk=task_id, session=session)
    except Task.DoesNotExist:
        raise NotFound("No such task in this session.", code=ErrorCode.UNKNOWN_TASK) from None


async def cancel(task: Task, *, by: str, actor=None, ip: str | None = None) -> Task:
    """Asks the task's worker to stop it (gracefully, then by force after
    TASK_CANCEL_GRACE_SECONDS); 409 when it has finished or is being cancelled."""
    now = timezone.now()
    asked = await Task.objects.filter(
        pk=task.pk, status=Task.Status.RUNNING, cancel_requested_at__isnull=True
    ).aupdate(cancel_requested_at=now, cancelled_by=by[:150], updated_at=now)
    if not asked:
        task = await Task.objects.select_related("execution").aget(pk=task.pk)
        state = "is being cancelled" if task.status == Task.Status.RUNNING else task.status
        raise Conflict(f"Task {task.pk} {state} already.", code=ErrorCode.TASK_FINISHED)
    await sync_to_async(audit.record)(
        audit.Action.TASK_CANCELLED,
        actor=actor,
        actor_name=by,
        target=task.pk,
        ip=ip,
        details={"session": task.session_id, "tool": task.tool},
    )
    task = await Task.objects.select_related("execution").aget(pk=task.pk)
    await events.publish(task.session_id, events.LiveEvent.TASK_UPDATE, **task.to_dict())
    log.info("task_cancel_requested", task=task.pk, by=by)
    return task


async def report(execution: ToolExecution, line: str) -> None:
    """A progress line of a running call: kept on its task (if it is one) and shown on
    its page."""
    line = " ".join(line.split())[:300]
    if not line:
        return
    await Task.objects.filter(execution_id=execution.pk, status=Task.Status.RUNNING).aupdate(
        progress=line, updated_at=timezone.now()
    )
    await events.publish(
        execution.session_id,
        events.LiveEvent.TASK_PROGRESS,
        call_id=execution.call_id,
        progress=line,
    )


class Throttle:
    """Lets a progress line through at most every PROGRESS_EVERY_SECONDS (the last one
    held back is sent by flush)."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self.send = send
        self.last = 0.0
        self.held: str | None = None

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_SECONDS:
            self.last, self.held = now, None
            self.send(line)
        else:
            self.held = line

    def flush(self) -> None:
        if self.held is not None:
            self.send(self.held)
            self.held = None


def cancel_requested(execution_id: int) -> bool:
    return Task.objects.filter(
        execution_id=execution_id, cancel_requested_at__isnull=False
    ).exists()


def count_usage(execution_id: int, *, input_tokens: int, output_tokens: int, cost_usd) -> None:
    """An agent's tokens and cost, on its task and on its session (beside the voice
    model's: the session's cost is what the conversation cost)."""
    cost_usd = Decimal(str(cost_usd))
    task = Task.objects.filter(execution_id=execution_id).first()
    if task is None:
        return
    Task.objects.filter(pk=task.pk).update(
        input_tokens=F("input_tokens") + input_tokens,
        output_tokens=F("output_tokens") + output_tokens,
        cost_usd=F("cost_usd") + cost_usd,
    )
    VoiceSession.objects.filter(pk=task.session_id).update(
        input_tokens=F("input_tokens") + input_tokens,
        output_tokens=F("output_tokens") + output_tokens,
        total_tokens=F("total_tokens") + input_tokens + output_tokens,
        cost_usd=F("cost_usd") + cost_usd,
    )


def agent_hooks(execution: ToolExecution) -> AgentHooks:
    """What an agent's run reports, for the task of execution: each step as progress on
    its page and as a ToolExecution of its own, tied to the task."""
    started: dict[str, tuple[int, float]] = {}

    async def task() -> Task | None:
        return await Task.objects.filter(execution_id=execution.pk).afirst()

    async def on_progress(text: str) -> None:
        await report(execution, text)

    async def on_tool_start(call_id: str, name: str, arguments: dict) -> None:
        owner = await task()
        step = await ToolExecution.objects.acreate(
            session_id=execution.session_id,
            call_id=f"{owner.pk if owner else execution.call_id}:{call_id}"[:80],
            tool=name[:80],
            arguments=arguments if isinstance(arguments, dict) else {},
            origin=ToolExecution.Origin.AGENT,
            status=ToolExecution.Status.RUNNING,
            started_at=timezone.now(),
            task=owner,
            worker=execution.worker,
        )
        started[call_id] = (step.pk, time.monotonic())
        if owner is not None:
            await Task.objects.filter(pk=owner.pk).aupdate(steps_count=F("steps_count") + 1)
        await report(execution, f"{name}: {summary_of(name, arguments)}")

    async def on_tool_end(call_id: str, name: str, result) -> None:
        pk, began = started.pop(call_id, (None, time.monotonic()))
        if pk is None:
            return
        output = result.output if isinstance(result.output, str) else str(result.output or "")
        error = (result.error or {}).get("message", "") if not result.success else ""
        cap = settings.TOOL_OUTPUT_MAX_BYTES
        ok, failed = ToolExecution.Status.SUCCEEDED, ToolExecution.Status.FAILED
        await ToolExecution.objects.filter(pk=pk).aupdate(
            status=ok if result.success else failed,
            output=redact(storable(output[:cap])),
            error=redact(storable(str(error)[:2000])),
            finished_at=timezone.now(),
            duration_seconds=time.monotonic() - began,
        )

    return AgentHooks(on_progress=on_progress, on_tool_start=on_tool_start, on_tool_end=on_tool_end)


# --- delivery, by the process holding the call's sideband ---------------------------


def result_message(task: Task) -> str:
    """What the model is told when a task ends."""
    if task.status == Task.Status.CANCELLED:
        return f"Task {task.pk} ({task.summary or task.tool}) was cancelled by {task.cancelled_by}."
    said = task.output[:SPOKEN_OUTPUT_CHARS] + (
        "…" if len(task.output) > SPOKEN_OUTPUT_CHARS else ""
    )
    how = "finished" if task.status == Task.Status.SUCCEEDED else "failed"
    return f"Task {task.pk} ({task.summary or task.tool}) {how}. Result:\n{said}"


async def has_pending(session_id: str) -> bool:
    """Whether the session has tasks running or not yet told to the model."""
    return await Task.objects.filter(
        Q(status=Task.Status.RUNNING) | Q(delivery=Task.Delivery.PENDING),
        session_id=session_id,
    ).aexists()


async def deliver_next(session_id: str, send: Callable[[dict], Awaitable[None]]) -> bool:
    """Tells the model on the call how one finished task ended: claims its delivery
    (so no other holder tells it too), sends the result and asks for a short report.
    False when there was nothing to tell. A send that fails gives the claim back."""
    task = await Task.objects.filter(session_id=session_id).undelivered().afirst()
    if task is None:
        return False
    now = timezone.now()
    claimed = await Task.objects.filter(pk=task.pk, delivery=Task.Delivery.PENDING).aupdate(
        delivery=Task.Delivery.SPOKEN, delivered_at=now
    )
    if not claimed:
        return True  # another holder took it: look again
    try:
        await send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": result_message(task)}],
                },
            }
        )
        await send(
            {
                "type": "response.create",
                "response": {
                    "instructions": (
                        f"A background task just ended ({task.pk}). Tell the user in one "
                        "or two short sentences what came of it, then carry on."
                    )
                },
            }
        )
    except Exception:
        await Task.objects.filter(pk=task.pk).aupdate(
            delivery=Task.Delivery.PENDING, delivered_at=None
        )
        raise
    log.info("task_delivered", task=task.pk)
    return True


def keep_undelivered(session_id: str) -> int:
    """The call ended: tasks not told to the model are kept on the session, shown on its
    page and in the admin, not spoken."""
    return Task.objects.filter(session_id=session_id, delivery=Task.Delivery.PENDING).update(
        delivery=Task.Delivery.KEPT
    )


def overdue() -> list[Task]:
    """Running tasks past TASK_MAX_SECONDS, or whose session ended more than
    TASK_GRACE_SECONDS ago, not yet being cancelled."""
    now = timezone.now()
    return list(
        Task.objects.running()
        .filter(cancel_requested_at__isnull=True)
        .filter(
            Q(created_at__lt=now - timedelta(seconds=settings.TASK_MAX_SECONDS))
            | Q(session__ended_at__lt=now - timedelta(seconds=settings.TASK_GRACE_SECONDS))
        )
        .select_related("execution")
    )


def stop_overdue() -> int:
    """Cancels the tasks past their time; returns how many."""
    stopped = 0
    for task in overdue():
        try:
            syncloop.from_sync(cancel)(task, by="system (time limit)")
            stopped += 1
        except Conflict:
            continue
    return stopped
