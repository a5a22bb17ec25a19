"""What happens to voice sessions: start, connect, record, end, expire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.base import ContentFile
from django.db.models import Count, Q
from django.utils import timezone

from ops_app import degradation, ratelimit
from ops_app.metrics import (
    voice_session_created_total,
    voice_session_duration_seconds,
)
from sessions_app import quality, realtime, sideband, tokens, transcripts
from sessions_app.callers import Caller
from sessions_app.models import VoiceSession
from tools_app import policy
from voiceplatform.celery import enqueue
from voiceplatform.errors import Conflict, ServiceUnavailable, TooManyRequests

log = structlog.get_logger(__name__)

VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse")


@dataclass(frozen=True)
class StartedSession:
    session: VoiceSession
    token: str
    client_secret: dict


def config_of(session: VoiceSession) -> dict:
    return realtime.session_config(
        model=session.model,
        voice=session.voice,
        instructions=session.instructions,
        tools=session.tools,
    )


async def start_session(
    *,
    caller: Caller,
    instructions: str | None,
    voice: str | None,
    client_ip: str | None,
    user_agent: str = "",
    source: str = VoiceSession.Source.WEB,
) -> StartedSession:
    """Mints an ephemeral secret upstream under our policy and records the session."""
    level = await degradation.current_level()
    degradation.refuse_in_maintenance(level)
    if client_ip:
        await ratelimit.hit(f"session:ip:{client_ip}", settings.SESSION_RATE_LIMIT_PER_IP)
    if caller.rate_key:
        await ratelimit.hit(f"session:{caller.rate_key}", settings.SESSION_RATE_LIMIT_PER_USER)
    await _check_room(caller, client_ip)

    session = VoiceSession(
        source=source,
        model=settings.OPENAI_MODEL,
        voice=voice or settings.OPENAI_DEFAULT_VOICE,
        instructions=session_instructions(instructions, level),
        tools=await session_tools(caller, level),
        pod=settings.POD_NAME,
        degradation_level=level,
        user_id=caller.user_id,
        api_key_id=caller.api_key_id,
        client_ip=client_ip,
        user_agent=user_agent[:300],
    )
    try:
        secret = await realtime.create_client_secret(config_of(session))
    except realtime.UpstreamError:
        voice_session_created_total.labels(region=settings.REGION, status="failed").inc()
        raise
    session.upstream_session_id = secret["session_id"][:80]
    session.created_at = timezone.now()
    session.expires_at = session.created_at + timedelta(seconds=settings.SESSION_MAX_SECONDS)
    await session.asave(force_insert=True)
    voice_session_created_total.labels(region=settings.REGION, status="created").inc()
    log.info("session_started", session_id=session.id, caller=caller.kind, ip=client_ip)
    return StartedSession(session=session, token=tokens.issue(session.id), client_secret=secret)


async def _check_room(caller: Caller, client_ip: str | None) -> None:
    """503 when this pod holds its capacity of live sessions; 429 when this client
    address, user or key already holds its share (one caller cannot fill the pod)."""
    counts = {"pod": Count("pk", filter=Q(pod=settings.POD_NAME))}
    if client_ip:
        counts["ip"] = Count("pk", filter=Q(client_ip=client_ip))
    if caller.api_key_id:
        counts["caller"] = Count("pk", filter=Q(api_key_id=caller.api_key_id))
    elif caller.user_id:
        counts["caller"] = Count("pk", filter=Q(user_id=caller.user_id))
    held = await VoiceSession.objects.live().aaggregate(**counts)
    retry_after = settings.SESSION_CONNECT_GRACE_SECONDS
    if held["pod"] >= settings.SESSION_CAPACITY:
        raise ServiceUnavailable(
            "No capacity for another session right now.", code="at_capacity", retry_after=30
        )
    if held.get("ip", 0) >= settings.SESSION_LIVE_PER_IP:
        raise TooManyRequests(
            "This address already holds as many live sessions as it may; end one first.",
            code="too_many_live_sessions",
            retry_after=retry_after,
        )
    if held.get("caller", 0) >= settings.SESSION_LIVE_PER_CALLER:
        raise TooManyRequests(
            "This account already holds as many live sessions as it may; end one first.",
            code="too_many_live_sessions",
            retry_after=retry_after,
        )


async def session_tools(caller: Caller, level: int) -> list[dict]:
    """The function tools a new session gets: the caller's policy, none when degraded."""
    if level != degradation.FULL:
        return []
    return policy.definitions(await policy.allowed_names(caller))


def session_instructions(requested: str | None, level: int) -> str:
    instructions = requested or settings.SESSION_DEFAULT_INSTRUCTIONS
    if level == degradation.REDUCED:
        instructions += (
            "\n\nTools are unavailable right now. If asked to do a task, say: "
            f'"{degradation.NO_TOOLS_MESSAGE}"'
        )
    return instructions


def require_live(session: VoiceSession) -> None:
    if not session.is_live:
        raise Conflict(f"The session has {session.status}.", code="session_ended")


async def expire_if_overdue(session: VoiceSession) -> VoiceSession:
    if due := session.end_due:
        status, reason = due
        return await end_session(session, reason=reason, status=status)
    return session


async def connect_call(session: VoiceSession, offer: str) -> str:
    """Forwards the browser's SDP offer upstream; returns the answer and records the call."""
    require_live(session)
    claimed = await VoiceSession.objects.filter(
        pk=session.pk, status=VoiceSession.Status.CREATED, call_id__isnull=True
    ).aupdate(status=VoiceSession.Status.CONNECTING)
    if not claimed:
        raise Conflict("This session already has a call.", code="already_connected")
    call_id = None
    try:
        answer, call_id = await realtime.create_call(offer, config_of(session))
        connected = await VoiceSession.objects.filter(
            pk=session.pk, status=VoiceSession.Status.CONNECTING
        ).aupdate(
            call_id=call_id,
            status=VoiceSession.Status.ACTIVE,
            connected_at=timezone.now(),
            updated_at=timezone.now(),
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
        raise Conflict("The session ended while connecting.", code="session_ended")
    session.call_id = call_id
    session.status = VoiceSession.Status.ACTIVE
    if settings.SIDEBAND_ENABLED:
        sideband.attach(session.pk, call_id)
    log.info("call_connected", session_id=session.pk, call_id=call_id)
    return answer


async def _hangup_quietly(call_id: str) -> None:
    try:
        await realtime.hangup(call_id)
    except realtime.UpstreamError as exc:
        log.info("hangup_failed", call_id=call_id, code=exc.code)


async def record_events(session: VoiceSession, events: list[dict]) -> int:
    """Intake from the browser: transcript events the server could not see itself, and
    the client's audio-quality stats."""
    require_live(session)
    stats = [event for event in events if event.get("type") == "client.stats"]
    await quality.record(session, stats)
    return await transcripts.apply_events(
        session.pk, events, source="client", count_usage=not session.sideband_connected
    )


async def store_recording(session: VoiceSession, audio: bytes, extension: str) -> None:
    """Keeps the client's recording of the conversation, once its session allows it."""
    grace = timedelta(seconds=settings.RECORDING_UPLOAD_GRACE_SECONDS)
    if not session.is_live and (
        session.ended_at is None or session.ended_at + grace < timezone.now()
    ):
        raise Conflict("The session ended too long ago to take a recording.", code="session_ended")
    if session.recording:
        raise Conflict("This session already has a recording.", code="recording_exists")
    await sync_to_async(session.recording.save)(
        f"{session.pk}.{extension}", ContentFile(audio), save=False
    )
    await session.asave(update_fields=["recording", "updated_at"])


async def end_session(
    session: VoiceSession,
    *,
    reason: str,
    status: str = VoiceSession.Status.ENDED,
) -> VoiceSession:
    """Ends a live session once (later calls change nothing): hangs up the call, stops
    the sideband, records the duration, and exports the transcript."""
    now = timezone.now()
    duration = (now - (session.connected_at or session.created_at)).total_seconds()
    claimed = await VoiceSession.objects.filter(
        pk=session.pk, status__in=VoiceSession.LIVE_STATUSES
    ).aupdate(status=status, ended_at=now, end_reason=reason, duration_seconds=duration)
    if claimed:
        if session.call_id:
            await _hangup_quietly(session.call_id)
        await sideband.detach(session.pk, drain_seconds=settings.SIDEBAND_DRAIN_SECONDS)
        voice_session_duration_seconds.observe(duration)
        await _export_transcript(session.pk)
        layer = get_channel_layer()
        if layer is not None:
            await layer.group_send(
                transcripts.group_name(session.pk),
                {
                    "type": "session.event",
                    "event": {"type": "session.ended", "status": status, "reason": reason},
                },
            )
        log.info("session_ended", session_id=session.pk, reason=reason, status=str(status))
    return await VoiceSession.objects.aget(pk=session.pk)


async def _export_transcript(session_id: str) -> None:
    """Queues the export; if that fails, the periodic sweep exports it later."""
    from sessions_app.tasks import export_transcript_task

    try:
        await enqueue(export_transcript_task, session_id)
    except Exception as exc:
        log.warning("export_not_queued", session_id=session_id, error=type(exc).__name__)


async def end_session_by_id(session_id: str, *, reason: str) -> None:
    session = await VoiceSession.objects.filter(pk=session_id).afirst()
    if session is not None:
        await end_session(session, reason=reason)


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
