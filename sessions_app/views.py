"""The voice API: thin views over sessions_app.actions."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from sessions_app import actions, callers, offers, webhooks
from sessions_app.bodies import EventsBody, SessionBody, SessionsQuery
from sessions_app.models import VoiceSession
from voiceplatform.api import (
    api_view,
    client_ip,
    parse_body,
    parse_query,
    read_body,
    spool_body,
)
from voiceplatform.errors import BadRequest, ErrorCode, NotFound


@api_view("POST")
async def create_session(request: HttpRequest) -> JsonResponse:
    body = parse_body(request, SessionBody, optional=True)
    caller = await callers.session_creator(request)
    started = await actions.start_session(
        caller=caller,
        instructions=body.instructions,
        voice=body.voice,
        client_ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", ""),
        resume_from=body.resume,
    )
    response = JsonResponse(started.as_response(), status=201)
    response["X-Voice-Session-Id"] = started.session.pk
    if settings.SESSION_AFFINITY_COOKIE == "app":
        # Where the ingress sets VOICE_AFFINITY itself, ours would overwrite its value.
        response.set_cookie(
            "VOICE_AFFINITY",
            settings.POD_NAME,
            max_age=settings.SESSION_MAX_SECONDS,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=settings.SESSION_COOKIE_SECURE,
        )
    return response


@api_view("GET")
async def list_sessions(request: HttpRequest) -> JsonResponse:
    caller = await callers.session_owner(request)
    query = parse_query(request, SessionsQuery)
    listed = await actions.past_sessions(caller, page=query.page, limit=query.limit)
    response = JsonResponse(listed)
    response["Cache-Control"] = "private, no-store"
    return response


async def _live_session(request: HttpRequest, session_id: str | None = None) -> VoiceSession:
    session = await callers.session_for_token(request, session_id)
    session = await actions.expire_if_overdue(session)
    actions.require_live(session)
    return session


@api_view("POST")
async def sdp(request: HttpRequest) -> HttpResponse:
    offer = read_body(request, max_bytes=settings.SDP_MAX_BYTES, content_types=("application/sdp",))
    session = await _live_session(request)
    answer = await actions.connect_call(session, offers.offer_text(offer))
    response = HttpResponse(answer, status=201, content_type="application/sdp")
    response["X-Call-Id"] = session.call_id
    return response


@api_view("POST")
async def session_events(request: HttpRequest, session_id: str) -> JsonResponse:
    body = parse_body(request, EventsBody)
    session = await _live_session(request, session_id)
    changed = await actions.record_events(session, body.events)
    return JsonResponse({"received": len(body.events), "changed": changed})


@api_view("POST")
async def end_session(request: HttpRequest, session_id: str) -> JsonResponse:
    session = await callers.session_for_token(request, session_id)
    session = await actions.end_session(session, reason=VoiceSession.EndReason.CLIENT)
    return JsonResponse(session.as_ended())


@api_view("POST")
async def webhook(request: HttpRequest, provider: str) -> JsonResponse:
    if provider != "openai":
        raise NotFound(f"Unknown webhook provider '{provider}'.", code=ErrorCode.UNKNOWN_PROVIDER)
    body = read_body(
        request, max_bytes=settings.JSON_MAX_BYTES, content_types=("application/json",)
    )
    outcome, record = await webhooks.receive(
        body, {k.lower(): v for k, v in request.headers.items()}, ip=client_ip(request)
    )
    return JsonResponse({"status": outcome, "outcome": record.outcome if record else None})


# What a recording may be: its content type, and how its first bytes must look.
RECORDING_TYPES = {
    "audio/webm": ("webm", lambda head: head.startswith(b"\x1a\x45\xdf\xa3")),
    "audio/ogg": ("ogg", lambda head: head.startswith(b"OggS")),
    "audio/mp4": ("m4a", lambda head: head[4:8] == b"ftyp"),
    "audio/wav": ("wav", lambda head: head.startswith(b"RIFF") and head[8:12] == b"WAVE"),
}


@api_view("POST", before_body=callers.token_session_id)
async def upload_recording(request: HttpRequest, session_id: str) -> JsonResponse:
    session = await callers.session_for_token(request, session_id)
    actions.check_recording_wanted(session)
    with await spool_body(
        request, max_bytes=settings.RECORDING_MAX_BYTES, content_types=tuple(RECORDING_TYPES)
    ) as audio:
        extension, looks_right = RECORDING_TYPES.get(request.content_type, ("", None))
        head = audio.read(16)
        audio.seek(0)
        if looks_right is None or not looks_right(head):
            raise BadRequest(
                "The body is not a recording (webm, ogg, m4a or wav audio).",
                code=ErrorCode.INVALID_RECORDING,
            )
        await actions.store_recording(session, audio, extension)
    return JsonResponse({"session_id": session.pk, "bytes": audio.size}, status=201)
