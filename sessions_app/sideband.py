"""The server's own connection to each live call: it records the transcript as it
happens, without trusting the browser to relay it."""

from __future__ import annotations

import asyncio
import contextlib
import json

import structlog

from sessions_app import realtime, transcripts

log = structlog.get_logger(__name__)

_running: dict[str, asyncio.Task] = {}


def attach(session_id: str, call_id: str) -> None:
    """Starts listening on the call in this process (the pod the session is pinned to)."""
    if session_id in _running:
        return
    task = asyncio.create_task(_listen(session_id, call_id), name=f"sideband:{session_id}")
    _running[session_id] = task
    task.add_done_callback(lambda _: _running.pop(session_id, None))


async def detach(session_id: str, *, drain_seconds: float = 0.0) -> None:
    """Stops listening. With drain_seconds, first lets the connection deliver what is
    still in flight (after a hangup upstream closes it once everything is sent)."""
    task = _running.pop(session_id, None)
    if task is None or task is asyncio.current_task():
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


async def _listen(session_id: str, call_id: str) -> None:
    from sessions_app import actions  # actions imports this module

    structlog.contextvars.bind_contextvars(session_id=session_id, call_id=call_id)
    ended_by_upstream = False
    try:
        async with realtime.sideband(call_id) as connection:
            log.info("sideband_attached")
            while True:
                try:
                    raw = await connection.recv_bytes()
                except Exception as exc:  # the SDK raises the websocket's close error
                    ended_by_upstream = getattr(exc, "rcvd", None) is not None and (
                        exc.rcvd.code == 1000
                    )
                    break
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    await transcripts.apply_events(session_id, [event], source="sideband")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("sideband_failed", error=type(exc).__name__)
        return
    log.info("sideband_closed", ended_by_upstream=ended_by_upstream)
    if ended_by_upstream:
        await actions.end_session_by_id(session_id, reason="call_ended")
