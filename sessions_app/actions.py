"""What happens to voice sessions: start (browser, API or SIP), connect, record, end,
expire. Views, webhooks and tasks call these; nothing below imports them."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.files import File
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from ops_app import degradation, drain, ratelimit
from ops_app.metrics import voice_session_created_total, voice_session_duration_seconds
from sessions_app import (
    events,
    journal,
    quality,
    realtime,
    recorder,
    resume,
    sideband,
    tokens,
    transcripts,
)
from sessions_app.callers import Caller
from sessions_app.models import ConversationItem, VoiceSession
from sessions_app.signals import session_ended
from tools_app import actions as tool_actions
from tools_app import background, policy, workspace
from voiceplatform.api import client_network
from voiceplatform.errors import (
    ApiError,
    Conflict,
    ErrorCode,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StartedSession:
    session: VoiceSession
    token: str
    client_secret: dict

    def as_response(self) -> dict:
        return self.session.as_started(token=self.token, client_secret=self.client_secret)


async def start_session(
    *,
    caller: Caller,
    instructions: str | None,
    voice: str | None,
    client_ip: str | None,
    user_agent: str = "",
    resume_from: str | None = None,
) -> StartedSession:
    """Mints an ephemeral secret upstream under our policy and records the session.
    A draining process refuses at once (its readiness takes a while to reach the load
    balancer, and a caller pinned here by affinity would keep coming): try again.
    resume_from: a past session of the caller's to carry on from (its context and
    workspace)."""
    if drain.is_draining():
        raise ServiceUnavailable(
            "This server is shutting down; try again.",
            code=ErrorCode.DRAINING,
            retry_after=settings.DRAIN_RETRY_AFTER_SECONDS,
        )
    level = await degradation.current_level()
    await degradation.refuse_in_maintenance(level)
    network = client_network(client_ip)
    if network:
        await ratelimit.hit(f"session:ip:{network}", settings.SESSION_RATE_LIMIT_PER_IP)
    if caller.rate_key:
        await ratelimit.hit(f"session:{caller.rate_key}", settings.SESSION_RATE_LIMIT_PER_USER)
    await _check_room(caller, network)
    earlier = await _resumable(caller, resume_from) if resume_from is not None else None
    session = await _new_session(
        caller,
        level,
        source=VoiceSession.Source.API if caller.api_key_id else VoiceSession.Source.WEB,
        instructions=instructions,
        voice=voice or (earlier.voice if earlier else None),
        client_ip=client_ip,
        user_agent=user_agent,
    )
    if earlier is not None:
        await _carry_on(session, earlier)
    try:
        secret = await realtime.create_client_secret(config_of(session))
    except realtime.UpstreamError:
        _count_created(session, "failed")
        raise
    session.upstream_session_id = secret["session_id"][:80]
    created = journal.created(session)
    await journal.write(created)
    await journal.remember(session, row=created["row"])
    _count_created(session, "created")
    log.info("session_started", session_id=session.id, caller=caller.kind, ip=client_ip)
    return StartedSession(session=session, token=tokens.issue(session.id), client_secret=secret)


def _count_created(session: VoiceSession, status: str) -> None:
    voice_session_created_total.labels(
        region=settings.REGION, status=status, source=session.source
    ).inc()


async def _resumable(caller: Caller, session_id: str) -> VoiceSession:
    """The caller's own past session to resume: 404 for anyone else's, an anonymous
    one or none at all (the same answer, so ids reveal nothing); 409 while it is live
    (end it first: two calls at once would share its workspace, and its context would
    be a snapshot of a conversation still going on)."""
    session = (
        await VoiceSession.objects.owned_by(user_id=caller.user_id, api_key_id=caller.api_key_id)
        .filter(pk=session_id)
        .afirst()
    )
    if session is None:
        raise NotFound("No such session to resume.", code=ErrorCode.SESSION_NOT_FOUND)
    session = await expire_if_overdue(session)
    if session.is_live:
        raise Conflict(
            "That conversation is still going on; end it before resuming it.",
            code=ErrorCode.SESSION_LIVE,
        )
    return session


async def _carry_on(session: VoiceSession, earlier: VoiceSession) -> None:
    """Makes session the continuation of earlier: linked to it, its instructions
    carrying earlier's context, and its workspace earlier's while that is still kept."""
    session.resumed_from = earlier
    context = await resume.context_of(earlier)
    if context:
        session.instructions = f"{session.instructions}\n\n{context}"
    if earlier.workspace in await asyncio.to_thread(workspace.session_workspaces):
        session.workspace = earlier.workspace


async def past_sessions(caller: Caller, *, page: int, limit: int) -> dict:
    """GET /sessions: the caller's own sessions, newest first, a page at a time."""
    owned = VoiceSession.objects.owned_by(user_id=caller.user_id, api_key_id=caller.api_key_id)
    start = (page - 1) * limit
    rows = [
        session
        async for session in resume.with_preview(owned.order_by("-created_at", "-pk"))[
            start : start + limit + 1
        ]
    ]
    more = len(rows) > limit
    listed = [session.as_listed(resume.preview(session.preview)) for session in rows[:limit]]
    return {
        "sessions": listed,
        "page": page,
        "limit": limit,
        "next": f"{reverse('session-list')}?{urlencode({'page': page + 1, 'limit': limit})}"
        if more
        else None,
    }


async def accept_incoming_call(call_id: str, *, caller_id: str) -> tuple[str, VoiceSession | None]:
    """A SIP call rings: accepted as a session of an anonymous caller under the same
    policy as /session, or rejected (maintenance, capacity). Returns (outcome, session);
    raises 503 for an upstream hiccup, so the webhook's sender tries again."""
    level = await degradation.current_level()
    # A redelivered webhook finds the session it started: it does not count against
    # capacity a second time.
    session = await VoiceSession.objects.filter(call_id=call_id).afirst()
    try:
        await degradation.refuse_in_maintenance(level)
        if session is None:
            await _check_room(Caller(), network=None)
    except ApiError as refusal:
        busy = refusal.code == ErrorCode.AT_CAPACITY
        try:
            await realtime.reject_call(call_id, status_code=486 if busy else 503)
        except realtime.UpstreamError as exc:  # the caller hung up already: nothing to retry
            log.info("reject_failed", call_id=call_id, code=exc.code)
        return f"rejected: {refusal.code}", None
    if session is None:
        session = await _new_session(
            Caller(), level, source=VoiceSession.Source.SIP, user_agent=caller_id
        )
        session.call_id = call_id
        await session.asave(force_insert=True)
    try:
        await realtime.accept_call(call_id, config_of(session))
    except realtime.UpstreamError as exc:
        if exc.status in (502, 503, 504) and exc.code != ErrorCode.UPSTREAM_REFUSED:
            raise ServiceUnavailable("Could not accept the call.", retry_after=5) from exc
        # Refused for good (the caller hung up, the call is unknown): nothing to retry.
        _count_created(session, "failed")
        await end_session(
            session, reason=VoiceSession.EndReason.ACCEPT_REFUSED, status=VoiceSession.Status.FAILED
        )
        return f"failed: {exc.code}", session
    await VoiceSession.objects.filter(pk=session.pk).aupdate(
        status=VoiceSession.Status.ACTIVE, connected_at=timezone.now(), updated_at=timezone.now()
    )
    _count_created(session, "created")
    _went_live(session, call_id)
    return "accepted", session


async def _new_session(
    caller: Caller,
    level: int,
    *,
    source: VoiceSession.Source,
    instructions: str | None = None,
    voice: str | None = None,
    client_ip: str | None = None,
    user_agent: str = "",
) -> VoiceSession:
    """An unsaved session under our policy: the caller's tools unless degraded."""
    now = timezone.now()
    session = VoiceSession(
        source=source,
        model=settings.OPENAI_MODEL,
        voice=voice or settings.OPENAI_DEFAULT_VOICE,
        instructions=_instructions(instructions, level),
        tools=await _tools(caller, level),
        pod=settings.POD_NAME,
        degradation_level=level,
        user_id=caller.user_id,
        api_key_id=caller.api_key_id,
        client_ip=client_ip,
        client_network=client_network(client_ip) or "",
        user_agent=user_agent[:300],
        created_at=now,
        expires_at=now + timedelta(seconds=settings.SESSION_MAX_SECONDS),
    )
    session.workspace = session.pk  # set here too: the journal's insert skips save()
    return session


async def _check_room(caller: Caller, network: str | None) -> None:
    """503 when this pod holds its capacity of live sessions; 429 when this client
    address, user or key already holds its share (one caller cannot fill the pod).
    Not checked while the database is away (level 3): the rate limits still hold."""
    if await journal.away():
        log.info("capacity_not_checked", reason="database unreachable")
        return
    counts = {"pod": Count("pk", filter=Q(pod=settings.POD_NAME))}
    if network:
        counts["ip"] = Count("pk", filter=Q(client_network=network))
    if caller.api_key_id:
        counts["caller"] = Count("pk", filter=Q(api_key_id=caller.api_key_id))
    elif caller.user_id:
        counts["caller"] = Count("pk", filter=Q(user_id=caller.user_id))
    try:
        held = await VoiceSession.objects.live().aaggregate(**counts)
    except journal.UNREACHABLE as exc:
        journal.went_away(exc)
        log.info("capacity_not_checked", reason="database unreachable")
        return
    retry_after = settings.SESSION_CONNECT_GRACE_SECONDS
    if held["pod"] >= settings.SESSION_CAPACITY:
        raise ServiceUnavailable(
            "No capacity for another session right now.",
            code=ErrorCode.AT_CAPACITY,
            retry_after=30,
        )
    if held.get("ip", 0) >= settings.SESSION_LIVE_PER_IP:
        raise TooManyRequests(
            "This address already holds as many live sessions as it may; end one first.",
            code=ErrorCode.TOO_MANY_LIVE_SESSIONS,
            retry_after=retry_after,
        )
    if held.get("caller", 0) >= settings.SESSION_LIVE_PER_CALLER:
        raise TooManyRequests(
            "This account already holds as many live sessions as it may; end one first.",
            code=ErrorCode.TOO_MANY_LIVE_SESSIONS,
            retry_after=retry_after,
        )


async def _tools(caller: Caller, level: int) -> list[dict]:
    """The function tools a new session gets: the caller's policy, none when degraded."""
    if level != degradation.FULL:
        return []
    return policy.definitions(await policy.allowed_names(caller))


def _instructions(requested: str | None, level: int) -> str:
    instructions = requested or settings.SESSION_DEFAULT_INSTRUCTIONS
    if level == degradation.REDUCED:
        instructions += (
            "\n\nTools are unavailable right now. If asked to do a task, say: "
            f'"{degradation.NO_TOOLS_MESSAGE}"'
        )
    return instructions


def config_of(session: VoiceSession) -> dict:
    return realtime.session_config(
        model=session.model,
        voice=session.voice,
        instructions=session.instructions,
        tools=session.tools,
    )


def require_live(session: VoiceSession) -> None:
    if not session.is_live:
        raise Conflict(f"The session has {session.status}.", code=ErrorCode.SESSION_ENDED)


async def expire_if_overdue(session: VoiceSession) -> VoiceSession:
    if due := session.end_due:
        status, reason = due
        return await end_session(session, reason=reason, status=status)
    return session


async def connect_call(session: VoiceSession, offer: str) -> str:
    """Forwards the browser's SDP offer upstream; returns the answer and records the call.
    In maintenance no new call is connected (live ones go on)."""
    require_live(session)
    await degradation.refuse_in_maintenance(await degradation.current_level())
    if await journal.deferring():
        return await _connect_while_deferring(session, offer)
    claimed = await VoiceSession.objects.filter(
        pk=session.pk, status=VoiceSession.Status.CREATED, call_id__isnull=True
    ).aupdate(status=VoiceSession.Status.CONNECTING)
    if not claimed:
        raise Conflict("This session already has a call.", code=ErrorCode.ALREADY_CONNECTED)
    call_id = None
    try:
        answer, call_id = await realtime.create_call(offer, config_of(session))
        session.connected_at = timezone.now()
        connected = await VoiceSession.objects.filter(
            pk=session.pk, status=VoiceSession.Status.CONNECTING
        ).aupdate(
            call_id=call_id,
            status=VoiceSession.Status.ACTIVE,
            connected_at=session.connected_at,
            updated_at=session.connected_at,
        )
    except BaseException:
        # Upstream failed, or the caller went away mid-request: the session may retry.
        await VoiceSession.objects.filter(
            pk=session.pk, status=VoiceSession.Status.CONNECTING
        ).aupdate(status=VoiceSession.Status.CREATED)
        if call_id:
            await _hangup_quietly(call_id)
        raise
    if not connected:
        # The session was ended while we were connecting: do not bring it back.
        await _hangup_quietly(call_id)
        raise Conflict("The session ended while connecting.", code=ErrorCode.SESSION_ENDED)
    session.call_id = call_id
    session.status = VoiceSession.Status.ACTIVE
    await journal.remember(session)
    _went_live(session, call_id)
    return answer


async def _claim(name: str) -> bool:
    """Once per name across processes while the database cannot say so (Redis, or this
    process alone when Redis is away too)."""
    try:
        return await cache.aadd(f"claim:{name}", 1, timeout=settings.SESSION_MAX_SECONDS)
    except Exception:
        if name in _claimed_here:
            return False
        _claimed_here.add(name)
        return True


_claimed_here: set[str] = set()


async def _unclaim(name: str) -> None:
    """Gives a claim back (what it was for did not happen)."""
    _claimed_here.discard(name)
    with contextlib.suppress(Exception):
        await cache.adelete(f"claim:{name}")


async def _connect_while_deferring(session: VoiceSession, offer: str) -> str:
    """connect_call at level 3: the session's snapshot says whether it may connect,
    and the connection is journaled."""
    if session.status != VoiceSession.Status.CREATED or session.call_id:
        raise Conflict("This session already has a call.", code=ErrorCode.ALREADY_CONNECTED)
    if not await _claim(f"connect:{session.pk}"):
        raise Conflict("This session already has a call.", code=ErrorCode.ALREADY_CONNECTED)
    try:
        answer, call_id = await realtime.create_call(offer, config_of(session))
    except BaseException:
        with contextlib.suppress(Exception):  # the session may retry
            await cache.adelete(f"claim:connect:{session.pk}")
        _claimed_here.discard(f"connect:{session.pk}")
        raise
    session.call_id = call_id
    session.status = VoiceSession.Status.ACTIVE
    session.connected_at = timezone.now()
    await journal.write(journal.connected(session))
    await journal.remember(session)
    _went_live(session, call_id)
    return answer


def _went_live(session: VoiceSession, call_id: str) -> None:
    """A call is up: the server listens on its sideband (when enabled); a draining
    process leaves that to another, which takes the call over at its next sweep."""
    if settings.SIDEBAND_ENABLED:
        sideband.attach(session.pk, call_id, SIDEBAND_HANDLERS)
    log.info("call_connected", session_id=session.pk, call_id=call_id)


async def _ended_by_upstream(session_id: str) -> None:
    session = await journal.lookup(session_id)
    if session is not None:
        await end_session(session, reason=VoiceSession.EndReason.CALL_ENDED)


SIDEBAND_HANDLERS = sideband.Handlers(
    function_call=tool_actions.answer_for_model,
    upstream_ended=_ended_by_upstream,
    transcript=recorder.record,
    deliver_task=background.deliver_next,
    tasks_pending=background.has_pending,
    task_group=background.nudge_group,
)


async def _hangup_quietly(call_id: str) -> None:
    try:
        await realtime.hangup(call_id)
    except realtime.UpstreamError as exc:
        log.info("hangup_failed", call_id=call_id, code=exc.code)


async def record_events(session: VoiceSession, realtime_events: list[dict]) -> int:
    """Intake from the browser: transcript events the server could not see itself, and
    the client's audio-quality stats; bounded in rate and in what it may store."""
    require_live(session)
    await ratelimit.hit(f"events:{session.pk}", settings.SESSION_EVENTS_PER_MINUTE)
    if await journal.deferring():
        # The transcript's size and the audio stats live in the database: at level 3
        # the size is not checked (the rate limit still holds) and the stats are lost.
        log.info("relay_journaled", session_id=session.pk)
    else:
        await transcripts.check_room(session.pk)
        stats = [event for event in realtime_events if event.get("type") == events.CLIENT_STATS]
        await quality.record(session, stats)
    return await record_transcript(
        session.pk,
        realtime_events,
        source=ConversationItem.Source.CLIENT,
        count_usage=session.sideband_seen_at is None and not session.sideband_connected,
    )


async def record_transcript(
    session_id: str, realtime_events: list[dict], *, source: str, count_usage: bool = True
) -> int:
    """Records what the events say about the transcript, now or (level 3) once the
    database returns; returns how many items changed (or will)."""
    relevant = transcripts.relevant(realtime_events)
    if not relevant:
        return 0
    applied, changed = await journal.write(
        journal.recorded(session_id, relevant, source=source, count_usage=count_usage)
    )
    return changed if applied else sum(1 for e in relevant if transcripts.changes_for(e))


def check_recording_wanted(session: VoiceSession) -> None:
    """409 unless the session may still take a recording (as it was loaded: before
    reading an upload; store_recording decides for good)."""
    grace = timedelta(seconds=settings.RECORDING_UPLOAD_GRACE_SECONDS)
    if not session.is_live and (
        session.ended_at is None or session.ended_at + grace < timezone.now()
    ):
        raise Conflict(
            "The session ended too long ago to take a recording.", code=ErrorCode.SESSION_ENDED
        )
    if session.recording:
        raise _recording_exists()


async def store_recording(session: VoiceSession, audio: File, extension: str) -> None:
    """Keeps the client's recording of the conversation, once its session allows it.

    One per session: the session's recording is claimed in the database (a conditional
    UPDATE) before anything is stored, so of uploads racing for one session the losers
    get a 409 and store nothing; a claim whose storing fails is given back."""
    check_recording_wanted(session)
    field = session.recording.field
    name = field.generate_filename(session, f"{session.pk}.{extension}")
    claimed = await VoiceSession.objects.filter(pk=session.pk, recording="").aupdate(
        recording=name, updated_at=timezone.now()
    )
    if not claimed:
        raise _recording_exists()
    try:
        stored = await sync_to_async(field.storage.save)(name, audio, max_length=field.max_length)
    except BaseException:
        await VoiceSession.objects.filter(pk=session.pk, recording=name).aupdate(recording="")
        raise
    if stored != name:  # the storage kept it under another name (one was taken)
        await VoiceSession.objects.filter(pk=session.pk, recording=name).aupdate(recording=stored)
    session.recording = stored


def _recording_exists() -> Conflict:
    return Conflict("This session already has a recording.", code=ErrorCode.RECORDING_EXISTS)


async def end_session(
    session: VoiceSession,
    *,
    reason: VoiceSession.EndReason,
    status: VoiceSession.Status = VoiceSession.Status.ENDED,
) -> VoiceSession:
    """Ends a live session once (later calls change nothing): hangs up the call, stops
    the sideband, records the duration, and tells whoever listens."""
    now = timezone.now()
    duration = (now - (session.connected_at or session.created_at)).total_seconds()
    deferring = await journal.deferring()
    if deferring:
        claimed = session.is_live and await _claim(f"end:{session.pk}")
        if claimed:
            session.status, session.ended_at, session.end_reason = status, now, reason
            session.duration_seconds = duration
            await journal.write(journal.ended(session))
            await journal.remember(session)
    else:
        claimed = await VoiceSession.objects.filter(
            pk=session.pk, status__in=VoiceSession.LIVE_STATUSES
        ).aupdate(status=status, ended_at=now, end_reason=reason, duration_seconds=duration)
    if claimed:
        if session.call_id:
            await _hangup_quietly(session.call_id)
        await sideband.detach(session.pk, drain_seconds=settings.SIDEBAND_DRAIN_SECONDS)
        voice_session_duration_seconds.observe(duration)
        if not deferring:
            # At level 3 the export waits for the history: the sweep exports ended
            # sessions that have none, once the journal is written.
            await session_ended.asend(sender=VoiceSession, session_id=session.pk)
        await events.publish(
            session.pk, events.LiveEvent.SESSION_ENDED, status=str(status), reason=str(reason)
        )
        log.info("session_ended", session_id=session.pk, reason=str(reason), status=str(status))
    if not deferring:
        session = await VoiceSession.objects.aget(pk=session.pk)
        await journal.remember(session)  # what an outage would serve must not be live
    return session


# What the model says before staff hang a call up (end_for_staff).
STAFF_GOODBYE = "I'm sorry, our support team has to end this call now. Thank you, and goodbye."


async def end_for_staff(session: VoiceSession) -> bool:
    """Ends one live call for a member of staff: the model says a short goodbye when
    the call is connected (within STAFF_GOODBYE_SECONDS), then the call is hung up
    upstream with end reason staff. True when the goodbye was said. Once per session
    across processes: a second ask while the first runs is refused (409). The end
    happens whatever becomes of the goodbye; if it fails, the call may be ended again."""
    claim = f"staff-end:{session.pk}"
    if not session.is_live or not await _claim(claim):
        raise Conflict("This call has ended, or is being ended.", code=ErrorCode.SESSION_ENDED)
    said = False
    try:
        if session.call_id and session.status == VoiceSession.Status.ACTIVE:
            said = await sideband.say_last_words(
                session.call_id, STAFF_GOODBYE, seconds=settings.STAFF_GOODBYE_SECONDS
            )
    finally:
        try:
            await end_session(session, reason=VoiceSession.EndReason.STAFF)
        except BaseException:
            await _unclaim(claim)
            raise
    return said


async def expire_overdue_sessions() -> int:
    """Ends every live session past its lifetime, or never connected within the grace;
    returns how many."""
    count = 0
    async for session in VoiceSession.objects.overdue():
        if due := session.end_due:
            status, reason = due
            await end_session(session, reason=reason, status=status)
            count += 1
    return count
