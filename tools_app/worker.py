"""Tool calls, the worker side: claim a queued call, run it once, record its result,
and notice calls whose worker died. Synchronous: it runs inside Celery workers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from datetime import timedelta
from typing import Any

import structlog
from django.conf import settings
from django.utils import timezone

from ops_app import breakers
from sessions_app import events
from tools_app import registry
from tools_app.models import ToolExecution
from tools_app.workspace import Workspace
from voiceplatform import syncloop
from voiceplatform.celery import app as celery_app
from voiceplatform.redaction import redact

log = structlog.get_logger(__name__)

WORKER_LOST = "The worker running this tool stopped before it finished; it was not run again."
OUT_OF_TIME = "The tool ran out of time."
# A tool still running after this long is announced as running to its session's pages.
RUNNING_NOTICE_SECONDS = 0.25


def run(execution_id: int, worker: str | None = None) -> None:
    """Runs one execution. A message delivered again after its worker died finds the
    row 'running' and marks it failed rather than running it twice."""
    worker = f"{worker or socket.gethostname()}:{os.getpid()}"
    claimed = ToolExecution.objects.filter(
        pk=execution_id, status=ToolExecution.Status.QUEUED
    ).update(
        status=ToolExecution.Status.RUNNING,
        worker=worker[:200],
        started_at=timezone.now(),
        updated_at=timezone.now(),
    )
    execution = ToolExecution.objects.get(pk=execution_id)
    if not claimed:
        if execution.status == ToolExecution.Status.RUNNING and _original_run_is_gone(execution):
            log.warning("tool_worker_lost", execution=execution_id, worker=execution.worker)
            fail_for_the_bridge(execution, WORKER_LOST)
        return
    structlog.contextvars.bind_contextvars(
        session_id=execution.session_id, call_id=execution.call_id
    )
    started = time.perf_counter()
    try:
        workspace = Workspace.for_session(execution.session_id)
    except OSError as exc:  # the worker's own disk: the bridge failing
        log.exception("workspace_unavailable", tool=execution.tool)
        fail_for_the_bridge(
            execution, f"The tool's workspace is unavailable ({type(exc).__name__})."
        )
        return
    try:
        tool = registry.get(execution.tool).build(workspace)
        result = syncloop.run(_execute(tool, execution))
    except Exception as exc:
        # An exception is the tool reacting to its input, which the caller chooses: it
        # must not count against the bridge, or any caller could open the breaker for
        # everyone. Only lost workers and task time limits do.
        log.exception("tool_raised", tool=execution.tool)
        message = f"The tool failed unexpectedly ({type(exc).__name__})."
        finish(execution, ok=False, output=message, error=message)
        return
    # A tool's own failure, its own timeout included, is an answer for the model.
    error = (result.error or {}).get("message", "") if not result.success else ""
    finish(execution, ok=result.success, output=as_output(result), error=str(error))
    log.info(
        "tool_finished",
        tool=execution.tool,
        ok=result.success,
        seconds=round(time.perf_counter() - started, 3),
    )


async def _execute(tool, execution: ToolExecution):
    """Runs the tool. Its session's pages hear that it runs only when it takes a while:
    they show a call running from the moment the model makes it, so a quick call is
    announced once, finished."""

    sending = asyncio.Event()

    async def announce() -> None:
        await asyncio.sleep(RUNNING_NOTICE_SECONDS)
        sending.set()
        await events.publish(
            execution.session_id, events.LiveEvent.TOOL_UPDATE, **_update(execution)
        )

    announcing = asyncio.ensure_future(announce())
    try:
        return await tool.execute(execution.arguments)
    finally:
        if sending.is_set():
            await announcing  # its "running" goes out before the result does
        else:
            announcing.cancel()


def finish(
    execution: ToolExecution, *, ok: bool, output: str, error: str, infrastructure_ok: bool = True
) -> bool:
    """Records the result of a running execution, once: a second finisher (a late
    original after a redelivery, the lost-run sweep) changes nothing."""
    now = timezone.now()
    cap = settings.TOOL_OUTPUT_MAX_BYTES
    output = redact(storable(output if len(output) <= cap else output[:cap] + "\n[output cut]"))
    started = execution.started_at or execution.created_at
    fields = {
        "status": ToolExecution.Status.SUCCEEDED if ok else ToolExecution.Status.FAILED,
        "output": output,
        "error": redact(storable(error[:2000])),
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
    _publish(execution)  # the waiting caller first: the breaker's count can follow
    breakers.record(breakers.amplifier(), infrastructure_ok)
    return True


def fail_for_the_bridge(execution: ToolExecution, message: str) -> bool:
    """Fails a running execution for a reason of ours (lost worker, time limit): the
    model hears it, and it counts against the tools breaker."""
    return finish(execution, ok=False, output=message, error=message, infrastructure_ok=False)


def fail_lost() -> tuple[int, list[tuple[int, str]]]:
    """Marks failed the executions 'running' longer than any tool may run (their worker
    is gone and the broker will not deliver them again). Returns how many, and the ids
    and tools of executions whose queueing was lost, to be queued again."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.TOOL_TIMEOUT_SECONDS + 60)
    lost = ToolExecution.objects.filter(status=ToolExecution.Status.RUNNING, started_at__lt=cutoff)
    failed = sum(fail_for_the_bridge(execution, WORKER_LOST) for execution in lost)
    stranded = ToolExecution.objects.filter(
        status=ToolExecution.Status.QUEUED, created_at__lt=now - timedelta(seconds=60)
    ).values_list("pk", "tool")
    return failed, list(stranded)


def _original_run_is_gone(execution: ToolExecution) -> bool:
    """Whether the worker that claimed this execution stopped without finishing it."""
    host, _, pid = execution.worker.rpartition(":")
    if host == socket.gethostname() or host.endswith(f"@{socket.gethostname()}"):
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return True
        return int(pid) == os.getpid()
    try:
        active = celery_app.control.inspect([host], timeout=1.0).active() or {}
    except Exception:
        return True
    return not any(
        task.get("args") in ([execution.pk], (execution.pk,))
        for tasks in active.values()
        for task in tasks
    )


def as_output(result: Any) -> str:
    """A ToolResult's output as the string the model hears."""
    output = result.output
    if output is None:
        return ""
    return output if isinstance(output, str) else json.dumps(output, default=str)


def storable(text: str) -> str:
    """Text PostgreSQL can hold: no NUL characters, no lone surrogates."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _update(execution: ToolExecution) -> dict:
    """The tool_update live event's fields: where one of the session's calls stands."""
    return {
        "call_id": execution.call_id,
        "tool": execution.tool,
        "arguments": execution.arguments,
        "status": execution.status,
        "output": execution.output[:2000],
        "error": execution.error,
    }


def _publish(execution: ToolExecution) -> None:
    if execution.is_finished:
        events.wake_execution_waiters_from_sync(execution)
    events.publish_from_sync(
        execution.session_id, events.LiveEvent.TOOL_UPDATE, **_update(execution)
    )
