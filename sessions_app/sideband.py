"""The server's own connection to each live call: it records the transcript as it
happens, without trusting the browser to relay it, and answers the model's function
calls. What to do with a function call, and with a call the upstream ended, is the
caller's (actions) to say: this module reports up through the handlers it is given."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import connections
from django.db.models.functions import Coalesce, Now

from sessions_app import events, realtime
from sessions_app.models import VoiceSession

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Handlers:
    # (session id, the function_call item) -> the output the model hears
    function_call: Callable[[str, dict], Awaitable[str]]
    # (session id): the upstream closed the call normally
    upstream_ended: Callable[[str], Awaitable[None]]
    # (session id, events seen on the call): record the transcript
    transcript: Callable[[str, list[dict]], Awaitable[int]]


_running: dict[str, asyncio.Task] = {}


def attach(session_id: str, call_id: str, handlers: Handlers) -> None:
    """Starts listening on the call in this process (the pod the session is pinned to)."""
    if session_id in _running:
        return
    task = asyncio.create_task(
        _own_context(session_id, call_id, handlers), name=f"sideband:{session_id}"
    )
    _running[session_id] = task
    task.add_done_callback(lambda _: _running.pop(session_id, None))


async def detach(session_id: str, *, drain_seconds: float = 0.0) -> None:
    """Stops listening. With drain_seconds, first lets the connection deliver what is
    still in flight (after a hangup upstream closes it once everything is sent)."""
    task = _running.pop(session_id, None)
    if task is None or task is asyncio.current_task():
        return
    if task.get_loop() is not asyncio.get_running_loop():
        # Ended from another thread (the in-process schedule): the listener's own loop
        # cancels it; the upstream hangup has already closed its connection.
        task.get_loop().call_soon_threadsafe(task.cancel)
        return
    if drain_seconds > 0:
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(task), drain_seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def detach_all() -> None:
    for session_id in list(_running):
        await detach(session_id)


async def _own_context(session_id: str, call_id: str, handlers: Handlers) -> None:
    """Runs the listener with database work on a thread of its own, and closes that
    thread's connection at the end (it outlives the request that started it)."""
    async with ThreadSensitiveContext():
        try:
            await _listen(session_id, call_id, handlers)
        finally:
            await sync_to_async(connections.close_all)()


async def _listen(session_id: str, call_id: str, handlers: Handlers) -> None:
    structlog.contextvars.bind_contextvars(session_id=session_id, call_id=call_id)
    ended_by_upstream = False
    try:
        async with realtime.sideband(call_id) as connection, asyncio.TaskGroup() as calls:
            await _mark(session_id, connected=True)
            log.info("sideband_attached")
            while True:
                try:
                    raw = await connection.recv_bytes()
                except Exception as exc:  # the SDK raises the websocket's close error
                    rcvd = getattr(exc, "rcvd", None)
                    ended_by_upstream = rcvd is not None and rcvd.code == 1000
                    break
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                try:
                    await handlers.transcript(session_id, [event])
                except Exception as exc:  # a database or Redis hiccup must not end the call
                    log.warning("sideband_event_not_recorded", error=type(exc).__name__)
                item = (
                    event.get("item") if event.get("type") == "response.output_item.done" else None
                )
                if isinstance(item, dict) and item.get("type") == "function_call":
                    calls.create_task(_answer(connection, session_id, item, handlers))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("sideband_failed", error=type(exc).__name__)
        return
    finally:
        await _mark(session_id, connected=False)
    log.info("sideband_closed", ended_by_upstream=ended_by_upstream)
    if ended_by_upstream:
        await handlers.upstream_ended(session_id)


async def _mark(session_id: str, *, connected: bool) -> None:
    """Records whether the server holds the call, and tells the browser: while it does,
    the page leaves tool calls and transcripts to the server."""
    with contextlib.suppress(Exception):
        held = {"sideband_seen_at": Coalesce("sideband_seen_at", Now())} if connected else {}
        await VoiceSession.objects.filter(pk=session_id).aupdate(
            sideband_connected=connected, **held
        )
        kind = (
            events.LiveEvent.SIDEBAND_ATTACHED if connected else events.LiveEvent.SIDEBAND_DETACHED
        )
        await events.publish(session_id, kind)


async def _answer(connection, session_id: str, item: dict, handlers: Handlers) -> None:
    """Executes the model's function call and tells the model the result."""
    try:
        output = await handlers.function_call(session_id, item)
        await connection.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": item.get("call_id"),
                    "output": output,
                },
            }
        )
        await connection.send({"type": "response.create"})
    except Exception as exc:  # one bad call must not drop the sideband
        log.warning("tool_answer_not_sent", error=type(exc).__name__)
