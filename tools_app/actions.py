"""Tool calls, exactly once: submit (either door), wait without blocking, run (worker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from datetime import timedelta
from typing import Any

import structlog
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from ops_app import breakers
from ops_app.metrics import voice_tool_execution_duration_seconds, voice_tool_execution_total
from sessions_app import transcripts
from sessions_app.models import VoiceSession
from tools_app import registry
from tools_app.models import ToolExecution
from tools_app.workspace import Workspace
from voiceplatform.celery import enqueue
from voiceplatform.errors import Conflict, ServiceUnavailable

log = structlog.get_logger(__name__)

WORKER_LOST = "The worker running this tool stopped before it finished; it was not run again."


def group_name(execution_id: int) -> str:
    return f"toolexec.{execution_id}"


async def submit(
    session: VoiceSession, *, call_id: str, tool: str, arguments: dict, origin: str
) -> tuple[ToolExecution, bool]:
    """The execution for (session, call_id), queued once however often it is submitted.
    Returns (execution, created)."""
    try:
        execution, created = await ToolExecution.objects.aget_or_create(
            session=session,
            call_id=call_id,
            defaults={"tool": tool, "arguments": arguments, "origin": origin},
        )
    except IntegrityError:
        execution, created = (
            await ToolExecution.objects.aget(session=session, call_id=call_id),
            False,
        )
    if not created and (execution.tool != tool or execution.arguments != arguments):
        raise Conflict(
            "This call_id was already used for a different tool call.", code="call_id_reused"
        )
    stranded = (
        execution.status == ToolExecution.Status.QUEUED
        and execution.created_at < timezone.now() - timedelta(seconds=QUEUE_AGAIN_AFTER_SECONDS)
    )
    if created or stranded:
        # Queued again when its first queueing was lost: claiming is atomic, so a
        # duplicate message is harmless.
        await _queue(execution)
    return execution, created


QUEUE_AGAIN_AFTER_SECONDS = 5


async def _queue(execution: ToolExecution) -> None:
    from tools_app.tasks import execute_tool_task

    try:
        await enqueue(execute_tool_task, execution.pk)
    except Exception as exc:
        log.warning("tool_not_queued", execution=execution.pk, error=type(exc).__name__)
        raise ServiceUnavailable(
            "Tools cannot be queued right now.", code="tools_unavailable", retry_after=5
        ) from None


async def wait_for(execution: ToolExecution, timeout: float) -> ToolExecution:
    """The execution once finished, or as it stands at the timeout. Waits on the
    channel layer: no thread is held and the event loop is never blocked."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = group_name(execution.pk)
    await layer.group_add(group, channel)
    deadline = time.monotonic() + timeout
    try:
        while True:
            execution = await ToolExecution.objects.aget(pk=execution.pk)
            remaining = deadline - time.monotonic()
            if execution.is_finished or remaining <= 0:
                return execution
            # Woken by the worker's message; the periodic re-read covers a message lost
            # with a restarted channel layer (timeouts and layer hiccups: just re-read).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(layer.receive(channel), min(remaining, 5.0))
    finally:
        await layer.group_discard(group, channel)


def observe(execution: ToolExecution) -> None:
    """The seed's tool metrics, recorded once, by the process that submitted the call."""
    status = execution.status if execution.is_finished else "timeout"
    voice_tool_execution_total.labels(tool_name=execution.tool, status=status).inc()
    if execution.duration_seconds is not None:
        voice_tool_execution_duration_seconds.labels(
            tool_name=execution.tool, status=status
        ).observe(execution.duration_seconds)


def as_output(result: Any) -> str:
    """A ToolResult's output as the string the model hears."""
    output = result.output
    if output is None:
        return ""
    return output if isinstance(output, str) else json.dumps(output, default=str)


def _publish(execution: ToolExecution) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    event = {
        "type": "tool.update",
        "call_id": execution.call_id,
        "tool": execution.tool,
        "arguments": execution.arguments,
        "status": execution.status,
        "output": execution.output[:2000],
        "error": execution.error,
    }
    send = async_to_sync(layer.group_send)
    if execution.is_finished:
        send(group_name(execution.pk), {"type": "tool.finished"})
    send(transcripts.group_name(execution.session_id), {"type": "session.event", "event": event})


def storable(text: str) -> str:
    """Text PostgreSQL can hold: no NUL characters, no lone surrogates."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def finish(
    execution: ToolExecution, *, ok: bool, output: str, error: str, infrastructure_ok: bool = True
) -> bool:
    """Records the result of a running execution, once: a second finisher (a late
    original after a redelivery, the lost-run sweep) changes nothing."""
    now = timezone.now()
    cap = settings.TOOL_OUTPUT_MAX_BYTES
    output = storable(output if len(output) <= cap else output[:cap] + "\n[output cut]")
    started = execution.started_at or execution.created_at
    fields = {
        "status": ToolExecution.Status.SUCCEEDED if ok else ToolExecution.Status.FAILED,
        "output": output,
        "error": storable(error[:2000]),
        "finished_at": now,
        "duration_seconds": (now - started).total_seconds(),
        "updated_at": now,
    }
    updated = ToolExecution.objects.filter(
        pk=execution.pk, status=ToolExecution.Status.RUNNING
    ).update(**fields)
    if not updated:
        return False
    for name, value in fields.items():
        setattr(execution, name, value)
    breakers.record(breakers.amplifier(), infrastructure_ok)
    _publish(execution)
    return True


def _original_run_is_gone(execution: ToolExecution) -> bool:
    """Whether the worker that claimed this execution stopped without finishing it."""
    from voiceplatform.celery import app

    host, _, pid = execution.worker.rpartition(":")
    if host == socket.gethostname() or host.endswith(f"@{socket.gethostname()}"):
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return True
        return int(pid) == os.getpid()
    try:
        active = app.control.inspect([host], timeout=1.0).active() or {}
    except Exception:
        return True
    return not any(
        task.get("args") in ([execution.pk], (execution.pk,))
        for tasks in active.values()
        for task in tasks
    )


def run(execution_id: int, worker: str | None = None) -> None:
    """Runs one execution in a worker (sync). A message delivered again after its worker
    died finds the row 'running' and marks it failed rather than running it twice."""
    worker = f"{worker or socket.gethostname()}:{os.getpid()}"
    claimed = ToolExecution.objects.filter(
        pk=execution_id, status=ToolExecution.Status.QUEUED
    ).update(
        status=ToolExecution.Status.RUNNING,
        worker=worker[:200],
        started_at=timezone.now(),
        updated_at=timezone.now(),
    )
    execution = ToolExecution.objects.select_related("session").get(pk=execution_id)
    if not claimed:
        if execution.status == ToolExecution.Status.RUNNING and _original_run_is_gone(execution):
            log.warning("tool_worker_lost", execution=execution_id, worker=execution.worker)
            finish(
                execution, ok=False, output=WORKER_LOST, error=WORKER_LOST, infrastructure_ok=False
            )
        return
    structlog.contextvars.bind_contextvars(
        session_id=execution.session_id, call_id=execution.call_id
    )
    _publish(execution)  # running
    spec = registry.get(execution.tool)
    started = time.perf_counter()
    try:
        tool = spec.build(Workspace.for_session(execution.session_id))
        result = asyncio.run(tool.execute(execution.arguments))
    except Exception as exc:  # a crashing tool is the bridge failing, not the tool saying no
        log.exception("tool_crashed", tool=execution.tool)
        message = f"The tool failed unexpectedly ({type(exc).__name__})."
        finish(execution, ok=False, output=message, error=message, infrastructure_ok=False)
        return
    # A tool's own failure, its own timeout included, is an answer for the model: the
    # bridge worked. Only crashes, lost workers and task time limits count against it.
    error = (result.error or {}).get("message", "") if not result.success else ""
    finish(execution, ok=result.success, output=as_output(result), error=str(error))
    log.info(
        "tool_finished",
        tool=execution.tool,
        ok=result.success,
        seconds=round(time.perf_counter() - started, 3),
    )


def fail_lost() -> int:
    """Periodic: marks failed the executions 'running' longer than any tool may run
    (their worker is gone and the broker will not deliver them again), and queues again
    those whose queueing was lost."""
    from tools_app.tasks import execute_tool_task

    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.TOOL_TIMEOUT_SECONDS + 60)
    lost = list(
        ToolExecution.objects.filter(status=ToolExecution.Status.RUNNING, started_at__lt=cutoff)
    )
    failed = sum(
        finish(execution, ok=False, output=WORKER_LOST, error=WORKER_LOST, infrastructure_ok=False)
        for execution in lost
    )
    stranded = ToolExecution.objects.filter(
        status=ToolExecution.Status.QUEUED, created_at__lt=now - timedelta(seconds=60)
    ).values_list("pk", flat=True)
    for execution_id in stranded:
        execute_tool_task.delay(execution_id)
    return failed
