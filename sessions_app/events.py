"""Live events of a session: who listens (channel-layer groups), the one way to tell
them (publish), and the event types the server, the page and the tests share."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum

import structlog
from channels.layers import get_channel_layer

from voiceplatform import syncloop

log = structlog.get_logger(__name__)


class LiveEvent(StrEnum):
    """What the session's WebSocket carries to its page."""

    SESSION_STATE = "session.state"
    TRANSCRIPT_ITEM = "transcript.item"
    TOOL_UPDATE = "tool.update"
    TASK_UPDATE = "task.update"  # a task started, was asked to stop, or ended
    TASK_PROGRESS = "task.progress"  # a running call's latest progress line
    SIDEBAND_ATTACHED = "sideband.attached"
    SIDEBAND_DETACHED = "sideband.detached"
    SESSION_ENDED = "session.ended"


# Realtime events that carry a whole conversation item, and those that finish one part
# of it by item id: what a transcript is built from.
ITEM_EVENTS = (
    "conversation.item.added",
    "conversation.item.created",
    "conversation.item.done",
    "response.output_item.added",
    "response.output_item.done",
)
USER_AUDIO_COMMITTED = "input_audio_buffer.committed"
USER_TRANSCRIPT_DONE = "conversation.item.input_audio_transcription.completed"
USER_TRANSCRIPT_FAILED = "conversation.item.input_audio_transcription.failed"
ASSISTANT_TEXT_DONE = ("response.output_audio_transcript.done", "response.output_text.done")
RESPONSE_DONE = "response.done"  # carries token usage

# What the page relays to /session/<id>/events while the server does not hold the
# call's sideband; the page reads this list from the server (data-relayed-types).
RELAYED_TYPES = (
    *ITEM_EVENTS,
    USER_AUDIO_COMMITTED,
    USER_TRANSCRIPT_DONE,
    USER_TRANSCRIPT_FAILED,
    *ASSISTANT_TEXT_DONE,
    RESPONSE_DONE,
)
CLIENT_STATS = "client.stats"  # the page's own WebRTC quality report


def session_group(session_id: str) -> str:
    """The channel-layer group of a session's WebSockets."""
    return f"session.{session_id}"


def execution_group(session_id: str, call_id: str) -> str:
    """The channel-layer group of whoever waits for one tool call (named by the call,
    so a waiter can join it before the call's row exists)."""
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:24]
    return f"toolexec.{session_id}.{digest}"


# What a finished tool call's waiters are told: enough to answer without reading it.
FINISHED_FIELDS = ("status", "output", "error", "started_at", "finished_at", "duration_seconds")


async def publish(session_id: str, kind: LiveEvent, /, **fields) -> None:
    """Sends one live event to every WebSocket of the session (fields may be named
    anything but 'type'). Best effort: a live event that cannot be sent is logged,
    never raised into the request or task that made it."""
    await _send(
        session_group(session_id),
        {"type": "session.event", "event": {"type": str(kind), **fields}},
        session_id=session_id,
        event=str(kind),
    )


async def publish_many(kind: LiveEvent, by_session: dict[str, list[dict]], /) -> None:
    """Sends live events of one kind to the WebSockets of several sessions: each
    session's as one channel-layer message (each socket receives them one by one, in
    order), all sessions' in one call where the layer can (two Redis round trips in all).
    Best effort, as publish."""
    sends = [
        (
            session_group(session_id),
            {"type": "session.events", "events": [{"type": str(kind), **f} for f in many]},
        )
        for session_id, many in by_session.items()
        if many
    ]
    layer = get_channel_layer()
    if layer is None or not sends:
        return
    try:
        if hasattr(layer, "group_send_many"):
            await layer.group_send_many(sends)
        else:  # the in-memory layer (the embedded default): in-process, one by one
            for group, message in sends:
                await layer.group_send(group, message)
    except Exception as exc:
        log.warning(
            "live_events_not_sent",
            error=f"{type(exc).__name__}: {exc}"[:200],
            sessions=len(sends),
            event=str(kind),
        )


async def wake_execution_waiters(execution) -> None:
    """Tells whoever waits for this finished tool execution how it ended. Best effort
    too: waiters re-read the database every few seconds."""
    result = {name: getattr(execution, name) for name in FINISHED_FIELDS}
    for name in ("started_at", "finished_at"):
        result[name] = result[name].isoformat() if result[name] else None
    await _send(
        execution_group(execution.session_id, execution.call_id),
        {"type": "tool.finished", "id": execution.pk, "result": result},
        execution=execution.pk,
    )


def apply_finished(execution, message: dict) -> bool:
    """Sets a waiter's execution to how its worker said it ended; False when the
    message is not that (the waiter then reads the row)."""
    result = message.get("result") if message.get("id") == execution.pk else None
    if not isinstance(result, dict) or set(result) != set(FINISHED_FIELDS):
        return False
    for name in FINISHED_FIELDS:
        value = result[name]
        if name in ("started_at", "finished_at") and value is not None:
            value = datetime.fromisoformat(value)
        setattr(execution, name, value)
    return execution.is_finished


async def _send(group: str, message: dict, **context) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group, message)
    except Exception as exc:
        log.warning("live_event_not_sent", error=f"{type(exc).__name__}: {exc}"[:200], **context)


# For worker code, which is synchronous (a kept loop per worker thread, see syncloop).
publish_from_sync = syncloop.from_sync(publish)
wake_execution_waiters_from_sync = syncloop.from_sync(wake_execution_waiters)
