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
from amplifier_core import CancellationToken
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from ops_app import breakers
from ops_app.metrics import count_error
from sessions_app import events
from tools_app import background, mounts, placement, registry
from tools_app.builtin.base import WorkspaceTool, failure
from tools_app.builtin.delegate import DelegateTool
from tools_app.models import ToolExecution
from tools_app.workspace import Workspace
from voiceplatform import syncloop, tracing
from voiceplatform.celery import app as celery_app
from voiceplatform.redaction import redact, storable

log = structlog.get_logger(__name__)

WORKER_LOST = "The worker running this tool stopped before it finished; it was not run again."
OUT_OF_TIME = "The tool ran out of time."
# A tool still running after this long is announced as running to its session's pages.
RUNNING_NOTICE_SECONDS = 0.25
# A call still running this long is watched for its task's cancellation, this often.
CANCEL_CHECK_AFTER_SECONDS = 0.5
CANCEL_CHECK_SECONDS = 0.5


def run(execution_id: int, worker: str | None = None, *, reset: bool = False) -> None:
    """Runs one execution. A message delivered again after its worker died finds the
    row 'running' and marks it failed rather than running it twice. With reset, its
    session's workspace was made afresh here (tools_app.placement): the output says so
    first, whatever it is."""
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
            fail_for_the_bridge(execution, WORKER_LOST, "worker_lost")
        return
    structlog.contextvars.bind_contextvars(
        session_id=execution.session_id, call_id=execution.call_id
    )
    attributes = tracing.tool_attributes(
        execution.session_id,
        execution.call_id,
        execution.tool,
        worker=worker,
        workspace_reset=reset,
    )
    with tracing.span("tool.run", attributes) as span:
        _run_claimed(execution, reset=reset)
        span.set_attribute("voice.tool_status", execution.status)


def _run_claimed(execution: ToolExecution, *, reset: bool) -> None:
    """Runs an execution this worker claimed, and records how it ended."""
    told = placement.RESET_NOTICE if reset else ""
    started = time.perf_counter()
    try:
        # The session's workspace: its own, or that of the session it resumed.
        workspace = Workspace.for_session(execution.session.workspace)
    except mounts.StorageFull as exc:  # the host's workspaces are all taken: an answer
        finish(
            execution, ok=False, output=told + exc.strerror, error=exc.strerror, kind="storage_full"
        )
        return
    except OSError as exc:  # the worker's own disk: the bridge failing
        log.exception("workspace_unavailable", tool=execution.tool)
        message = f"The tool's workspace is unavailable ({type(exc).__name__})."
        finish(
            execution,
            ok=False,
            output=told + message,
            error=message,
            kind="workspace_unavailable",
            infrastructure_ok=False,
        )
        return
    try:
        spec = registry.get(execution.tool)
        if spec.long_running:  # a task from the start: its steps need it to exist
            background.task_for_worker(execution)
        tool = spec.build(workspace)
        result = syncloop.run(_execute(tool, execution))
    except Exception as exc:
        # An exception is the tool reacting to its input, which the caller chooses: it
        # must not count against the bridge, or any caller could open the breaker for
        # everyone. Only lost workers and task time limits do.
        log.exception("tool_raised", tool=execution.tool)
        message = f"The tool failed unexpectedly ({type(exc).__name__})."
        finish(execution, ok=False, output=told + message, error=message, kind="tool_raised")
        return
    # A tool's own failure, its own timeout included, is an answer for the model.
    error = (result.error or {}) if not result.success else {}
    finish(
        execution,
        ok=result.success,
        output=told + as_output(result),
        error=str(error.get("message", "")),
        kind=str(error.get("type", "failed" if not result.success else "")),
    )
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
    loop = asyncio.get_running_loop()
    progress = background.Throttle(
        lambda line: asyncio.run_coroutine_threadsafe(background.report(execution, line), loop)
    )
    if isinstance(tool, WorkspaceTool):
        tool.session_id = execution.session_id
        tool.progress = progress
    if isinstance(tool, DelegateTool):
        tool.hooks = background.agent_hooks(execution)
        tool.cancellation = CancellationToken()
    running = asyncio.ensure_future(tool.execute(execution.arguments))
    watching = asyncio.ensure_future(_stop_when_cancelled(tool, execution, running))
    try:
        return await running
    except asyncio.CancelledError:
        if not running.cancelled():
            raise
        return failure("cancelled", "The task was cancelled before it finished.")
    finally:
        if isinstance(tool, DelegateTool) and tool.last_result is not None:
            spent = tool.last_result
            await sync_to_async(background.count_usage)(
                execution.pk,
                input_tokens=spent.input_tokens,
                output_tokens=spent.output_tokens,
                cost_usd=spent.cost_usd,
            )
        watching.cancel()
        progress.flush()
        if sending.is_set():
            await announcing  # its "running" goes out before the result does
        else:
            announcing.cancel()


async def _stop_when_cancelled(tool, execution: ToolExecution, running: asyncio.Future) -> None:
    """Watches a call that runs for a while for its task's cancellation: asks the tool
    to stop, and stops it by force when it has not after TASK_CANCEL_GRACE_SECONDS."""
    await asyncio.sleep(CANCEL_CHECK_AFTER_SECONDS)
    while True:  # a read every half second, only while a call runs that long
        if await sync_to_async(background.cancel_requested)(execution.pk):
            break
        await asyncio.sleep(CANCEL_CHECK_SECONDS)
    log.info("tool_cancelling", execution=execution.pk)
    getattr(tool, "cancel", lambda: None)()
    grace = settings.TASK_CANCEL_GRACE_SECONDS
    done, _ = await asyncio.wait({running}, timeout=grace)
    if done:
        return
    getattr(tool, "kill", lambda: None)()
    done, _ = await asyncio.wait({running}, timeout=grace)
    if not done:
        running.cancel()


def finish(
    execution: ToolExecution,
    *,
    ok: bool,
    output: str,
    error: str,
    kind: str = "",
    infrastructure_ok: bool = True,
) -> bool:
    """Records the result of a running execution, once: a second finisher (a late
    original after a redelivery, the lost-run sweep) changes nothing. kind: what kind
    of failure (the tool's own error type, or ours: ToolExecution.SERVICE_FAILURES)."""
    now = timezone.now()
    cap = settings.TOOL_OUTPUT_MAX_BYTES
    output = redact(storable(output if len(output) <= cap else output[:cap] + "\n[output cut]"))
    started = execution.started_at or execution.created_at
    fields = {
        "status": ToolExecution.Status.SUCCEEDED if ok else ToolExecution.Status.FAILED,
        "output": output,
        "error": redact(storable(error[:2000])),
        "failure": "" if ok else (kind or "failed")[:40],
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
    background.complete(execution)
    breakers.record(breakers.amplifier(), infrastructure_ok)
    if fields["failure"] in ToolExecution.SERVICE_FAILURES:
        count_error("tools", fields["failure"])
    return True


def fail_for_the_bridge(execution: ToolExecution, message: str, kind: str) -> bool:
    """Fails a running execution for a reason of ours (lost worker, time limit): the
    model hears it, and it counts against the tools breaker."""
    return finish(
        execution, ok=False, output=message, error=message, kind=kind, infrastructure_ok=False
    )


def fail_lost() -> tuple[int, list[ToolExecution]]:
    """Marks failed the executions whose worker is gone: its lease lapsed
    (tools_app.placement), or they have been 'running' longer than any tool may run
    (the broker will not deliver them again, or not to anyone who consumes them).
    Returns how many, and the executions whose queueing was lost (or that wait on the
    queue of a worker now gone), to be queued again."""
    now = timezone.now()
    longest = max(settings.TOOL_TIMEOUT_SECONDS, settings.TASK_MAX_SECONDS)
    cutoff = now - timedelta(seconds=longest + 60)
    running = ToolExecution.objects.filter(status=ToolExecution.Status.RUNNING)
    lost = list(running.filter(started_at__lt=cutoff))
    if not settings.CELERY_TASK_ALWAYS_EAGER:  # in-process calls have no worker lease
        leased = now - timedelta(seconds=settings.TOOL_WORKER_LEASE_SECONDS)
        lost += [
            execution
            for execution in running.filter(started_at__gte=cutoff, started_at__lt=leased)
            if placement.run_is_gone(execution)
        ]
    failed = sum(fail_for_the_bridge(execution, WORKER_LOST, "worker_lost") for execution in lost)
    stranded = ToolExecution.objects.filter(
        status=ToolExecution.Status.QUEUED, created_at__lt=now - timedelta(seconds=60)
    ).only("pk", "tool", "session_id")
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
