"""The server's own connection to each live call: it records the transcript as it
happens, without trusting the browser to relay it, and answers the model's function
calls. What to do with a function call, and with a call the upstream ended, is the
caller's (actions) to say: this module reports up through the handlers it is given.

One process holds a call's sideband at a time, under a lease (sessions_app.leases)
that it renews while it listens. Every web process sweeps for live calls whose lease
nobody holds (its holder died, or drained and let go) and takes them over: it
reconnects to the call's sideband, which upstream allows more than once. What was said
while nobody listened reaches the transcript through the browser's relay (idempotent
by item id); a tool call runs once however often it is submitted (ToolExecution)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import structlog
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connections
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from ops_app import drain
from ops_app.metrics import count_error, voice_sideband_events_total
from sessions_app import events, leases, realtime
from sessions_app.models import ConversationItem, VoiceSession
from voiceplatform import tracing

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Handlers:
    # (session id, the function_call item) -> the output the model hears
    function_call: Callable[[str, dict], Awaitable[str]]
    # (session id): the upstream closed the call normally
    upstream_ended: Callable[[str], Awaitable[None]]
    # (session id, events seen on the call): hands them to the transcript's writer;
    # the future of their writing (None when there is nothing to write)
    transcript: Callable[[str, list[dict]], Awaitable[asyncio.Future | None]]
    # Background tasks: (session id, send) tells the model how one ended, False when
    # none is left to tell; (session id) whether any runs or waits to be told; the
    # channel-layer group told when one of the session's tasks ends.
    deliver_task: Callable[[str, Callable[[dict], Awaitable[None]]], Awaitable[bool]] | None = None
    tasks_pending: Callable[[str], Awaitable[bool]] | None = None
    task_group: Callable[[str], str] | None = None


@dataclass
class _Hold:
    """One call held by this process: lost when another process has its lease."""

    session_id: str
    lost: bool = False
    failed: bool = False


_running: dict[str, asyncio.Task] = {}
_takeover_handlers: Handlers | None = None
_keeper: asyncio.Task | None = None


def attach(session_id: str, call_id: str, handlers: Handlers) -> None:
    """Starts holding the call in this process: takes its lease, then listens. Does
    nothing when this process already holds it, and stops at once if another does. A
    draining process takes no call: a process that is not draining will."""
    if session_id in _running:
        return
    if drain.is_draining():
        log.info("sideband_left_to_another_process", session_id=session_id)
        return
    # Held for minutes: not part of the trace of the request that started it (each
    # function call it answers is a trace of its own).
    with tracing.outside_any_trace():
        task = asyncio.create_task(
            _own_context(session_id, call_id, handlers), name=f"sideband:{session_id}"
        )
    _running[session_id] = task
    task.add_done_callback(lambda done: _forget(session_id, done))


def _forget(session_id: str, task: asyncio.Task) -> None:
    if _running.get(session_id) is task:
        del _running[session_id]


def held() -> list[str]:
    """The sessions whose sideband this process holds."""
    return list(_running)


async def detach(session_id: str, *, drain_seconds: float = 0.0) -> None:
    """Stops listening and gives the lease up. With drain_seconds, first lets the
    connection deliver what is still in flight (after a hangup upstream closes it once
    everything is sent)."""
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
    # A cancellation some await swallowed is noticed at the holder's next step
    # (_stop_if_cancelled); should one land where no step follows, it is asked again.
    while not (await asyncio.wait({task}, timeout=10.0))[0]:
        log.warning("sideband_slow_to_stop", session_id=session_id)
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


# How fast words are spoken, for when the upstream does not say when its audio ended.
SPOKEN_CHARACTERS_PER_SECOND = 15


async def say_last_words(call_id: str, words: str, *, seconds: float) -> bool:
    """Has the model on the call say words (a goodbye) before it is hung up: over a
    connection of its own (upstream allows several), whichever process holds the call.
    True once the model finished saying them (its audio played out, where the upstream
    tells), False when it could not within seconds."""
    instructions = (
        "The call is being ended now by the support team. Say exactly this to the "
        f'caller, in the language of the conversation, and nothing more: "{words}"'
    )
    done = False
    try:
        async with asyncio.timeout(seconds), realtime.sideband(call_id) as connection:
            # Whatever the model was saying, and what of it is still to be heard, gives
            # way to the goodbye.
            await connection.send({"type": "response.cancel"})
            await connection.send({"type": "output_audio_buffer.clear"})
            await connection.send(
                {"type": "response.create", "response": {"instructions": instructions}}
            )
            response_id, playing = None, False
            while True:
                event = json.loads(await connection.recv_bytes())
                kind = event.get("type") if isinstance(event, dict) else None
                ours = response_id is not None and event.get("response_id") == response_id
                if kind == "response.created" and response_id is None:
                    response_id = (event.get("response") or {}).get("id")
                elif kind == "output_audio_buffer.started" and ours:
                    playing = True
                elif kind == "output_audio_buffer.stopped" and ours:
                    return True
                elif kind == "response.done" and response_id:
                    done = done or (event.get("response") or {}).get("id") == response_id
                    if done and not playing:
                        # No word of its audio (an upstream that does not tell the
                        # sideband): give it the time the words take to say.
                        await asyncio.sleep(len(words) / SPOKEN_CHARACTERS_PER_SECOND)
                        return True
    except TimeoutError:
        return done
    except Exception as exc:  # the goodbye is a courtesy: the call is ended regardless
        log.info("last_words_not_said", error=type(exc).__name__)
        return False


async def detach_all() -> None:
    for session_id in list(_running):
        await detach(session_id)


async def hand_over() -> int:
    """Draining: stops listening on every call and releases their leases, so other
    processes take them over at their next sweep. Returns how many were held."""
    count = len(_running)
    await detach_all()
    if count:
        log.info("sidebands_handed_over", count=count)
    return count


# The database work of held calls runs on a few threads they share (a thread and a
# connection per call would not hold a thousand calls), never on a request's thread.
_db_threads: list[ThreadPoolExecutor] = []


def _db_thread(session_id: str) -> ThreadPoolExecutor:
    if not _db_threads:
        _db_threads.extend(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sideband-db")
            for _ in range(max(1, settings.SIDEBAND_DB_THREADS))
        )
    return _db_threads[zlib.crc32(session_id.encode()) % len(_db_threads)]


async def _own_context(session_id: str, call_id: str, handlers: Handlers) -> None:
    """Holds the call with database work on a sideband thread, not the thread of the
    request that started it (it outlives that request), and closes that thread's
    connection at the end (back to the pool; the next call there takes another)."""
    async with ThreadSensitiveContext(executor=_db_thread(session_id)):
        try:
            await _hold(session_id, call_id, handlers)
        finally:
            await sync_to_async(connections.close_all)()


async def _hold(session_id: str, call_id: str, handlers: Handlers) -> None:
    """Takes the lease and listens while renewing it. Let go of at the end, unless
    the connection failed: the lease then lapses, and a sweep tries again after it."""
    structlog.contextvars.bind_contextvars(session_id=session_id, call_id=call_id)
    try:
        taken = await leases.acquire(session_id)
    except leases.Unavailable:
        taken = True  # nobody can take it over now: listening beats losing the call
    if not taken:
        log.info("sideband_held_elsewhere")
        return
    # Until this process is connected nobody listens (a dead holder could not say so):
    # the page then relays tool calls itself.
    await _mark(session_id, connected=False, only_if_marked=True)
    hold = _Hold(session_id)
    listener = asyncio.create_task(_listen(hold, call_id, handlers))
    ended_by_upstream = False
    try:
        while not listener.done():
            _stop_if_cancelled()
            await asyncio.wait({listener}, timeout=settings.SIDEBAND_HEARTBEAT_SECONDS)
            if listener.done():
                break
            if drain.is_draining():  # let go: another process takes the call over
                log.info("sideband_handed_over")
                break
            with contextlib.suppress(leases.Unavailable):
                if not await leases.renew(session_id):
                    log.warning("sideband_lease_lost")
                    hold.lost = True
                    listener.cancel()
        if listener.done():
            with contextlib.suppress(asyncio.CancelledError):
                ended_by_upstream = await listener
    finally:
        if not listener.done():
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        if not (hold.lost or hold.failed):
            with contextlib.suppress(leases.Unavailable):
                await leases.release(session_id)
    if ended_by_upstream:
        # From this task, the one end_session's detach knows as the sideband's own.
        await handlers.upstream_ended(session_id)


async def _listen(hold: _Hold, call_id: str, handlers: Handlers) -> bool:
    """Records and answers what the call's sideband says; True when the upstream
    closed the call normally."""
    session_id = hold.session_id
    ended_by_upstream = False
    try:
        async with realtime.sideband(call_id) as connection, asyncio.TaskGroup() as calls:
            await _mark(session_id, connected=True)
            log.info("sideband_attached")
            answering: set[str] = set()
            speaker = _Speaker(connection, session_id, handlers)
            calls.create_task(speaker.tell_tasks())
            for item in await _unanswered_calls(session_id):
                log.info("sideband_answers_missed_call", call_id=item["call_id"])
                _start_answer(calls, connection, session_id, item, handlers, answering)
            while True:
                _stop_if_cancelled()
                try:
                    raw = await connection.recv_bytes()
                except Exception as exc:  # the SDK raises the websocket's close error
                    rcvd = getattr(exc, "rcvd", None)
                    ended_by_upstream = rcvd is not None and rcvd.code == 1000
                    break
                voice_sideband_events_total.inc()
                if _is_delta(raw):
                    continue  # a piece of text the finished item carries whole
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                speaker.saw(event)
                try:
                    await handlers.transcript(session_id, [event])
                except Exception as exc:  # a database or Redis hiccup must not end the call
                    log.warning("sideband_event_not_recorded", error=type(exc).__name__)
                    count_error("sideband", "event_not_recorded")
                item = (
                    event.get("item") if event.get("type") == "response.output_item.done" else None
                )
                if isinstance(item, dict) and item.get("type") == "function_call":
                    _start_answer(calls, connection, session_id, item, handlers, answering)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("sideband_failed", error=type(exc).__name__)
        count_error("sideband", type(exc).__name__)
        hold.failed = True
        return False
    finally:
        if not hold.lost:  # the new holder has marked it its own
            await _mark(session_id, connected=False)
    log.info("sideband_closed", ended_by_upstream=ended_by_upstream)
    return ended_by_upstream


class _Speaker:
    """Tells the model on the call how its background tasks ended: when one ends (the
    task's group is told), and when the call is taken over with results untold; always
    after the model's current response, never on top of it."""

    # Waiting for a response to end gives up after this long (one never announced).
    RESPONSE_PATIENCE_SECONDS = 20.0
    # While tasks run or wait to be told, the holder also looks this often (a lost word).
    RECHECK_SECONDS = 5.0

    def __init__(self, connection, session_id: str, handlers: Handlers) -> None:
        self.connection = connection
        self.session_id = session_id
        self.handlers = handlers
        self.idle = asyncio.Event()
        self.idle.set()
        self.told = asyncio.Event()

    def saw(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "response.created":
            self.idle.clear()
        elif kind == "response.done":
            self.idle.set()
        elif kind in ("conversation.item.added", "conversation.item.created"):
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                self.told.set()  # an answer went out: it may have started a task

    async def tell_tasks(self) -> None:
        handlers = self.handlers
        if handlers.deliver_task is None or handlers.tasks_pending is None:
            return
        # A call with no task costs the channel layer nothing: the holder listens for
        # its tasks' ends only once one runs or waits to be told.
        listening = None
        try:
            pending = await handlers.tasks_pending(self.session_id)
            while True:
                _stop_if_cancelled()
                if pending and listening is None and handlers.task_group is not None:
                    group = handlers.task_group(self.session_id)
                    listening = asyncio.create_task(self._listen(group))
                if pending:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.told.wait(), self.RECHECK_SECONDS)
                else:
                    await self.told.wait()
                self.told.clear()
                while await self._tell_one():
                    pass
                pending = await handlers.tasks_pending(self.session_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call goes on; the next holder tells what is left
            log.warning("sideband_tasks_not_told", error=type(exc).__name__)
        finally:
            if listening is not None:
                listening.cancel()

    async def _tell_one(self) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), self.RESPONSE_PATIENCE_SECONDS)
        told = await self.handlers.deliver_task(self.session_id, self.connection.send)
        if told:
            self.idle.clear()  # it asked for a response: the next waits for its end
        return told

    async def _listen(self, group: str) -> None:
        """Wakes tell_tasks when the group hears a task of the session ended (without a
        layer, tell_tasks' own look every RECHECK_SECONDS finds it)."""
        layer = get_channel_layer()
        if layer is None:
            return
        channel = None
        try:
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            self.told.set()  # anything that ended before we listened
            while True:
                await layer.receive(channel)
                self.told.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("sideband_task_group_lost", error=type(exc).__name__)
        finally:
            if channel is not None:
                with contextlib.suppress(Exception):
                    await layer.group_discard(group, channel)


# An event's type, read off the raw event: its first "type" key, near its start (the
# upstream writes it before any nested object). A string value cannot match: its quotes
# are escaped.
_TYPE = re.compile(rb'"type"\s*:\s*"([^"\\]*)"')
_TYPE_WINDOW = 200


def _is_delta(raw: bytes) -> bool:
    """A streamed piece (of a transcript, of a function call's arguments): it is not
    decoded, since the event that ends the stream carries the whole."""
    found = _TYPE.search(raw, 0, _TYPE_WINDOW)
    return found is not None and found.group(1).endswith(b".delta")


def _stop_if_cancelled() -> None:
    """Raises CancelledError when this task was asked to stop. Some awaits swallow a
    cancellation (asgiref's sync_to_async when its thread's work ends at the same
    moment, Python 3.11's wait_for when its inner future does); a listener that went on
    to its next recv() after that would hold the call, and its detach, forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _mark(session_id: str, *, connected: bool, only_if_marked: bool = False) -> None:
    """Records whether the server holds the call, and tells the browser: while it does,
    the page leaves tool calls and transcripts to the server. only_if_marked: says
    "not held" only where the session still says "held" (a holder that died)."""
    with contextlib.suppress(Exception):
        held = {"sideband_seen_at": Coalesce("sideband_seen_at", Now())} if connected else {}
        sessions = VoiceSession.objects.filter(pk=session_id)
        if only_if_marked:
            sessions = sessions.filter(sideband_connected=True)
        changed = await sessions.aupdate(sideband_connected=connected, **held)
        if only_if_marked and not changed:
            return
        kind = (
            events.LiveEvent.SIDEBAND_ATTACHED if connected else events.LiveEvent.SIDEBAND_DETACHED
        )
        await events.publish(session_id, kind)


async def _unanswered_calls(session_id: str) -> list[dict]:
    """The model's function calls in the transcript that no output answers yet: seen
    by a holder that died before answering, or relayed by the browser while nobody
    held the call. Answering them runs nothing twice (one execution per call_id)."""
    answered = ConversationItem.objects.filter(
        session_id=session_id, kind=ConversationItem.Kind.FUNCTION_CALL_OUTPUT
    ).values("call_id")
    calls = (
        ConversationItem.objects.filter(
            session_id=session_id,
            kind=ConversationItem.Kind.FUNCTION_CALL,
            status=ConversationItem.Status.COMPLETED,
        )
        .exclude(call_id="")
        .exclude(call_id__in=answered)
    )
    return [
        {"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments}
        async for c in calls
    ]


def _start_answer(
    calls: asyncio.TaskGroup,
    connection,
    session_id: str,
    item: dict,
    handlers: Handlers,
    answering: set[str],
) -> None:
    """Answers a function call once per connection, however often it is seen."""
    call_id = item.get("call_id")
    if call_id in answering:
        return
    answering.add(call_id)
    calls.create_task(_answer(connection, session_id, item, handlers))


async def _answer(connection, session_id: str, item: dict, handlers: Handlers) -> None:
    """Executes the model's function call and tells the model the result. The answer
    is in the transcript before the model is asked to go on, so a holder that takes
    the call over from here on finds it answered and does not answer again."""
    try:
        output = await handlers.function_call(session_id, item)
        answer = {
            "id": answer_id(item.get("call_id")),
            "type": "function_call_output",
            "call_id": item.get("call_id"),
            "output": output,
        }
        await connection.send({"type": "conversation.item.create", "item": answer})
        try:
            written = await handlers.transcript(
                session_id, [{"type": "conversation.item.created", "item": answer}]
            )
            if written is not None:
                await written
        except Exception as exc:  # recorded from the upstream's echo instead
            log.warning("tool_answer_not_recorded", error=type(exc).__name__)
        await connection.send({"type": "response.create"})
    except Exception as exc:  # one bad call must not drop the sideband
        log.warning("tool_answer_not_sent", error=type(exc).__name__)
        count_error("sideband", "tool_answer_not_sent")


def answer_id(call_id) -> str:
    """The one item id any holder gives its answer to a call: the upstream's echo of it
    updates the item recorded on sending, and a second answer would be the same item."""
    digest = hashlib.sha256(str(call_id).encode()).hexdigest()[:24]
    return f"out_{digest}"


def take_over_with(handlers: Handlers) -> None:
    """The handlers for calls this process takes over (set once, at start)."""
    global _takeover_handlers
    _takeover_handlers = handlers


async def sweep(handlers: Handlers) -> list[str]:
    """One pass: a draining process lets go of every call; any other takes over each
    live call whose lease nobody holds, and stops holding calls that ended elsewhere.
    Returns the sessions it set out to take over (the lease decides who wins)."""
    if drain.is_draining():
        await hand_over()
        return []
    mine = set(_running)
    live, settling = {}, set()
    # A call no holder has attached to yet, connected less than a lease ago, is the
    # accepting process's to take first (it may not hold the lease yet); once held, a
    # call is taken over as soon as its lease is free (a drain, a dead holder).
    settled_before = timezone.now() - timedelta(seconds=settings.SIDEBAND_LEASE_SECONDS)
    async for session_id, call_id, connected_at, seen_at in (
        VoiceSession.objects.live()
        .filter(status=VoiceSession.Status.ACTIVE)
        .exclude(call_id=None)
        .values_list("pk", "call_id", "connected_at", "sideband_seen_at")
    ):
        live[session_id] = call_id
        if seen_at is None and connected_at is not None and connected_at > settled_before:
            settling.add(session_id)
    for session_id in mine - live.keys():
        await detach(session_id)
    orphans = [s for s in live if s not in _running and s not in settling]
    try:
        holders = await leases.holders(orphans)
    except leases.Unavailable:
        return []  # nobody can tell who holds what: leave every call where it is
    taken = [session_id for session_id in orphans if holders[session_id] is None]
    for session_id in taken:
        log.info("sideband_taking_over", session_id=session_id)
        attach(session_id, live[session_id], handlers)
    return taken


def start_keeper() -> bool:
    """Starts this process's sweep on the running loop, once; False when it is off
    (no sideband, SIDEBAND_SWEEP_SECONDS=0, or no handlers to take calls over with)."""
    global _keeper
    if _keeper is not None and not _keeper.done():
        return False
    if (
        not settings.SIDEBAND_ENABLED
        or settings.SIDEBAND_SWEEP_SECONDS <= 0
        or _takeover_handlers is None
    ):
        return False
    _keeper = asyncio.get_running_loop().create_task(
        _keep(_takeover_handlers), name="sideband-keeper"
    )
    log.info("sideband_sweep_started", every_seconds=settings.SIDEBAND_SWEEP_SECONDS)
    return True


async def _keep(handlers: Handlers) -> None:
    while True:
        try:
            async with ThreadSensitiveContext():
                try:
                    await sweep(handlers)
                finally:
                    await sync_to_async(connections.close_all)()
        except Exception:  # one failed pass (database away) must not stop the sweep
            log.exception("sideband_sweep_failed")
            count_error("sideband", "sweep_failed")
        await asyncio.sleep(settings.SIDEBAND_SWEEP_SECONDS)


async def lease_holders() -> dict[str, str | None]:
    """Who holds each live call's sideband lease, by session id (None: nobody)."""
    live = [
        session_id
        async for session_id in VoiceSession.objects.live()
        .filter(status=VoiceSession.Status.ACTIVE)
        .exclude(call_id=None)
        .values_list("pk", flat=True)
    ]
    return await leases.holders(live)
