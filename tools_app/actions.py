"""Tool calls, the web side: check, submit exactly once, wait without blocking.
The worker side (running a call, recording its result) is tools_app.worker."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from datetime import timedelta

import structlog
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from ops_app import ratelimit
from ops_app.metrics import voice_tool_execution_duration_seconds, voice_tool_execution_total
from sessions_app import events, journal
from sessions_app.models import VoiceSession
from tools_app import background, placement
from tools_app.calls import ToolCall, arguments_of, check_call
from tools_app.models import Task, ToolExecution
from tools_app.tasks import execute_tool_task
from voiceplatform import tracing
from voiceplatform.celery import enqueue, enqueue_detached
from voiceplatform.errors import (
    ApiError,
    Conflict,
    ErrorCode,
    ServiceUnavailable,
    TooManyRequests,
)

log = structlog.get_logger(__name__)

# A call still queued this long after it was created is queued again when submitted
# again: its first queueing was lost (claiming is atomic, so a duplicate is harmless).
QUEUE_AGAIN_AFTER_SECONDS = 5
# The browser may see the model's call a moment before the sideband has recorded it.
SIDEBAND_PATIENCE_SECONDS = 2.0
# When a caller at its share of the workers may try again: most calls take seconds.
RUNNING_RETRY_AFTER_SECONDS = 5


async def run_for_client(
    session: VoiceSession, *, name: str, call_id: str, arguments: object, detach: bool = False
) -> ToolExecution | Task:
    """POST /tools/<name>: the finished execution, or the task it became. While the
    server holds the call's sideband it runs the model's calls itself; the browser may
    then only ask for their results."""
    origin = ToolExecution.Origin.CLIENT
    with tracing.span(
        "tool.call", tracing.tool_attributes(session.pk, call_id, name, origin=origin)
    ):
        await ratelimit.hit(f"tools:{session.pk}", settings.TOOLS_RATE_PER_MINUTE)
        call = await check_call(session, name=name, call_id=call_id, arguments=arguments)
        if session.sideband_connected:
            seen = await _seen_by_sideband(session, call_id)
            if seen is None or seen.tool != name or seen.arguments != arguments:
                raise Conflict(
                    "This call was not made by the model on this session's call.",
                    code=ErrorCode.UNKNOWN_CALL,
                )
        return await _run(call, origin, detach=detach)


async def answer_for_model(session_id: str, item: dict) -> str:
    """The sideband's door: what the model hears for its function_call item, a clear
    reason included when the call cannot run. Each call is a trace of its own."""
    origin = ToolExecution.Origin.SIDEBAND
    attributes = tracing.tool_attributes(
        session_id, item.get("call_id"), item.get("name"), origin=origin
    )
    with tracing.span("tool.call", attributes, new_trace=True):
        return await _answer_for_model(session_id, item)


async def _answer_for_model(session_id: str, item: dict) -> str:
    session = await journal.lookup(session_id)
    if session is None:
        raise VoiceSession.DoesNotExist(session_id)
    try:
        call = await check_call(
            session,
            name=item.get("name"),
            call_id=item.get("call_id"),
            arguments=arguments_of(item),
        )
        execution = await _run(call, ToolExecution.Origin.SIDEBAND)
    except ApiError as exc:
        if exc.code == ErrorCode.TOOLS_UNAVAILABLE:
            return exc.message  # already words for the model to say
        return f"Error: {exc.message}"
    if isinstance(execution, Task):
        return background.started_message(execution)
    if not execution.is_finished:
        return "Error: the tool did not finish in time."
    if execution.status == ToolExecution.Status.FAILED:
        return f"Error: {execution.output}"
    return execution.output


async def _run(
    call: ToolCall, origin: ToolExecution.Origin, *, detach: bool = False
) -> ToolExecution | Task:
    """The call's finished execution; or, for a call that goes on in the background
    (long-running, asked to, or not done within TASK_DETACH_AFTER_SECONDS), its task."""
    # Listening before submitting: the worker's word that it finished cannot be missed,
    # and it carries the result, so the row is not read again.
    async with Waiter(call.session.pk, call.call_id) as waiter:
        execution, created = await submit(call, origin=origin)
        repeat = Task.objects.filter(execution=execution).select_related("execution")
        if not created and (task := await repeat.afirst()):
            return task  # posted again: the same task
        at_once = background.detaches_at_once(
            call.name, long_running=call.long_running, asked=detach
        )
        window = 0.0 if at_once else settings.TASK_DETACH_AFTER_SECONDS
        execution = await waiter.wait(execution, min(window, settings.TOOL_TIMEOUT_SECONDS))
    if not execution.is_finished:
        return await background.detach(execution)
    if created:
        observe(execution)
    return execution


async def submit(call: ToolCall, *, origin: ToolExecution.Origin) -> tuple[ToolExecution, bool]:
    """The execution for (session, call_id), queued once however often it is submitted.
    Returns (execution, created). A repeat is a read of the first, never refused; a new
    call must fit its session's and its caller's share of the workers (429
    too_many_running) and what the session may send in arguments (409)."""
    try:
        execution, created = await sync_to_async(_admit, thread_sensitive=True)(call, origin)
    except IntegrityError:  # made meanwhile where nothing serialises (not PostgreSQL)
        execution = await ToolExecution.objects.aget(session=call.session, call_id=call.call_id)
        created = False
    if not created and (execution.tool != call.name or execution.arguments != call.arguments):
        raise Conflict(
            "This call_id was already used for a different tool call.",
            code=ErrorCode.CALL_ID_REUSED,
        )
    stranded = execution.status == ToolExecution.Status.QUEUED and (
        execution.created_at < timezone.now() - timedelta(seconds=QUEUE_AGAIN_AFTER_SECONDS)
    )
    if created or stranded:
        await _queue(execution)
    return execution, created


def _admit(call: ToolCall, origin: ToolExecution.Origin) -> tuple[ToolExecution, bool]:
    """(execution, created): the call's execution, made if there is room for it. One
    caller's submissions take turns (a transaction lock on PostgreSQL), so the counts
    it checks cannot be overrun by calls posted all at once."""
    session = call.session
    caller, mine = _caller(session)
    with transaction.atomic():
        _take_turn(caller)
        existing = ToolExecution.objects.filter(session=session, call_id=call.call_id).first()
        if existing is not None:
            return existing, False
        size = call.arguments_bytes
        sent = ToolExecution.objects.filter(session=session).aggregate(
            bytes=Coalesce(Sum("arguments_bytes"), 0)
        )["bytes"]
        if sent + size > settings.TOOL_ARGUMENTS_MAX_BYTES_PER_SESSION:
            raise Conflict(
                "This session's tool calls have sent as much in arguments as a session may"
                f" ({settings.TOOL_ARGUMENTS_MAX_BYTES_PER_SESSION} bytes).",
                code=ErrorCode.TOOL_ARGUMENTS_FULL,
            )
        held = (
            ToolExecution.objects.in_flight()
            .filter(mine)
            .aggregate(caller=Count("pk"), session=Count("pk", filter=Q(session=session)))
        )
        if held["session"] >= settings.TOOLS_MAX_RUNNING_PER_SESSION:
            _refuse_running(f"This session already has {held['session']} tool calls")
        if held["caller"] >= settings.TOOLS_MAX_RUNNING_PER_CALLER:
            _refuse_running(f"This caller's sessions already have {held['caller']} tool calls")
        execution = ToolExecution.objects.create(
            session=session,
            call_id=call.call_id,
            tool=call.name,
            arguments=call.arguments,
            arguments_bytes=size,
            origin=origin,
        )
    return execution, True


def _caller(session: VoiceSession) -> tuple[str, Q]:
    """Who made the session (its API key or user, else its client address, an IPv6 /64,
    else the session alone) and the filter of all their sessions' calls."""
    if session.api_key_id:
        return f"api_key:{session.api_key_id}", Q(session__api_key_id=session.api_key_id)
    if session.user_id:
        return f"user:{session.user_id}", Q(session__user_id=session.user_id)
    if session.client_network:
        network = session.client_network
        return f"network:{network}", Q(session__client_network=network)
    return f"session:{session.pk}", Q(session_id=session.pk)


def _take_turn(caller: str) -> None:
    if connection.vendor != "postgresql":
        return  # SQLite (the embedded default) writes one transaction at a time anyway
    key = hashlib.blake2b(f"tools:{caller}".encode(), digest_size=8).digest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(key, signed=True)])


def _refuse_running(held: str) -> None:
    log.info("tool_call_refused", reason="too_many_running", held=held)
    raise TooManyRequests(
        f"{held} queued or running, the most allowed; wait for one to finish before"
        " making another.",
        code=ErrorCode.TOO_MANY_RUNNING,
        retry_after=RUNNING_RETRY_AFTER_SECONDS,
    )


async def _queue(execution: ToolExecution) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # In-process (the embedded default) the call runs on a thread of its own while
        # its caller waits for it, as a worker's caller does: so it can be detached.
        await enqueue_detached(execute_tool_task, execution.pk)
        return
    try:
        # The worker holding the session's workspace, else the shared queue.
        queue = await sync_to_async(placement.queue_for, thread_sensitive=False)(execution)
        await enqueue(execute_tool_task, execution.pk, queue=queue)
    except Exception as exc:
        log.warning("tool_not_queued", execution=execution.pk, error=type(exc).__name__)
        raise ServiceUnavailable(
            "Tools cannot be queued right now.", code=ErrorCode.TOOLS_UNAVAILABLE, retry_after=5
        ) from None


class Waiter:
    """Waits for one tool call to finish on the channel layer: no thread is held and
    the event loop is never blocked. Entered before the call is submitted, it hears
    the worker's message whenever it comes; the row is re-read only when no message
    came for a while (a message lost with a restarted channel layer) or when there
    is no layer to listen on."""

    def __init__(self, session_id: str, call_id: str) -> None:
        self.group = events.execution_group(session_id, call_id)
        self.layer = get_channel_layer()
        self.channel: str | None = None

    async def __aenter__(self) -> Waiter:
        with contextlib.suppress(Exception):  # no layer: the re-reads still see it
            channel = await self.layer.new_channel()
            await self.layer.group_add(self.group, channel)
            self.channel = channel
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self.channel is not None:
            with contextlib.suppress(Exception):
                await self.layer.group_discard(self.group, self.channel)

    async def wait(self, execution: ToolExecution, timeout: float) -> ToolExecution:
        """The execution once finished, or as it stands at the timeout."""
        deadline = time.monotonic() + timeout
        fresh = self.channel is not None  # listening since before it was submitted
        while True:
            if not fresh:
                execution = await ToolExecution.objects.aget(pk=execution.pk)
            fresh = False
            remaining = deadline - time.monotonic()
            if execution.is_finished or remaining <= 0:
                return execution
            # A layer that fails at once must not turn this into a busy loop: then
            # just re-read every second.
            try:
                if self.channel is None:
                    raise ConnectionError("no channel")
                message = await asyncio.wait_for(
                    self.layer.receive(self.channel), min(remaining, 5.0)
                )
            except TimeoutError:
                continue
            except Exception:
                await asyncio.sleep(min(remaining, 1.0))
                continue
            if events.apply_finished(execution, message):
                return execution
            fresh = False


async def wait_for(execution: ToolExecution, timeout: float) -> ToolExecution:
    """The execution once finished, or as it stands at the timeout (for a caller that
    submitted it already: the row is read first)."""
    async with Waiter(execution.session_id, execution.call_id) as waiter:
        execution = await ToolExecution.objects.aget(pk=execution.pk)
        return await waiter.wait(execution, timeout)


def observe(execution: ToolExecution) -> None:
    """The seed's tool metrics, recorded once, by the process that submitted the call."""
    status = execution.status if execution.is_finished else "timeout"
    voice_tool_execution_total.labels(tool_name=execution.tool, status=status).inc()
    if execution.duration_seconds is not None:
        voice_tool_execution_duration_seconds.labels(
            tool_name=execution.tool, status=status
        ).observe(execution.duration_seconds)


async def _seen_by_sideband(session: VoiceSession, call_id: str) -> ToolExecution | None:
    """The execution the sideband made for call_id, waiting a moment for it."""
    deadline = time.monotonic() + SIDEBAND_PATIENCE_SECONDS
    while True:
        seen = await ToolExecution.objects.filter(session=session, call_id=call_id).afirst()
        if seen is not None or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.05)
