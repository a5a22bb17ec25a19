"""The voice API: thin views over sessions_app.actions."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from sessions_app import actions, callers, webhooks
from voiceplatform.api import api_view, client_ip, json_object, read_body
from voiceplatform.errors import BadRequest

MAX_EVENTS_PER_POST = 500


def _session_urls(session_id: str) -> dict:
    return {
        "sdp": "/sdp",
        "tools": "/tools/",
        "events": f"/session/{session_id}/events",
        "end": f"/session/{session_id}/end",
        "ws": f"/ws/sessions/{session_id}/",
    }


@api_view("POST")
async def create_session(request: HttpRequest) -> JsonResponse:
    body = json_object(request, allowed={"instructions", "voice"}, optional_body=True)
    instructions = body.get("instructions")
    if instructions is not None and (
        not isinstance(instructions, str)
        or len(instructions) > settings.SESSION_MAX_INSTRUCTIONS_CHARS
    ):
        raise BadRequest(
            "instructions must be a string of at most "
            f"{settings.SESSION_MAX_INSTRUCTIONS_CHARS} characters.",
            code="invalid_instructions",
        )
    voice = body.get("voice")
    if voice is not None and voice not in actions.VOICES:
        raise BadRequest(
            f"voice must be one of: {', '.join(actions.VOICES)}.", code="invalid_voice"
        )
    caller = await callers.session_creator(request)
    started = await actions.start_session(
        caller=caller,
        instructions=instructions,
        voice=voice,
        client_ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", ""),
    )
    session = started.session
    response = JsonResponse(
        {
            "session_id": session.pk,
            "session_token": started.token,
            "client_secret": {
                "value": started.client_secret["value"],
                "expires_at": started.client_secret["expires_at"],
            },
            "model": session.model,
            "voice": session.voice,
            "expires_at": session.expires_at.isoformat(),
            "tools": [tool["name"] for tool in session.tools],
            "degradation_level": session.degradation_level,
            "urls": _session_urls(session.pk),
        },
        status=201,
    )
    response["X-Voice-Session-Id"] = session.pk
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


async def _live_session(request: HttpRequest, session_id: str | None = None):
    session = await callers.session_for_token(request, session_id)
    session = await actions.expire_if_overdue(session)
    actions.require_live(session)
    return session


@api_view("POST")
async def sdp(request: HttpRequest) -> HttpResponse:
    offer = read_body(request, max_bytes=settings.SDP_MAX_BYTES, content_types=("application/sdp",))
    session = await _live_session(request)
    try:
        text = offer.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The SDP offer is not UTF-8 text.", code="invalid_sdp") from None
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if not text.startswith("v=0") or "\r\nm=" not in text:
        raise BadRequest("The body is not an SDP offer (v=0 ... m=...).", code="invalid_sdp")
    answer = await actions.connect_call(session, text)
    response = HttpResponse(answer, status=201, content_type="application/sdp")
    response["X-Call-Id"] = session.call_id
    return response


@api_view("POST")
async def session_events(request: HttpRequest, session_id: str) -> JsonResponse:
    body = json_object(request, allowed={"events"}, required={"events"})
    events = body["events"]
    if not isinstance(events, list) or not all(
        isinstance(event, dict) and isinstance(event.get("type"), str) for event in events
    ):
        raise BadRequest(
            "events must be a list of realtime events (objects with a type).", code="invalid_events"
        )
    if len(events) > MAX_EVENTS_PER_POST:
        raise BadRequest(
            f"Send at most {MAX_EVENTS_PER_POST} events at once.", code="too_many_events"
        )
    session = await _live_session(request, session_id)
    changed = await actions.record_events(session, events)
    return JsonResponse({"received": len(events), "changed": changed})


@api_view("POST")
async def end_session(request: HttpRequest, session_id: str) -> JsonResponse:
    session = await callers.session_for_token(request, session_id)
    session = await actions.end_session(session, reason="client")
    return JsonResponse(
        {
            "session_id": session.pk,
            "status": session.status,
            "ended_at": session.ended_at.isoformat() if session.ended_at else None,
            "duration_seconds": session.duration_seconds,
            "end_reason": session.end_reason,
        }
    )


@api_view("POST")
async def webhook(request: HttpRequest, provider: str) -> JsonResponse:
    if provider != "openai":
        raise BadRequest(
            f"Unknown webhook provider '{provider}'.", code="unknown_provider", status=404
        )
    body = read_body(
        request, max_bytes=settings.JSON_MAX_BYTES, content_types=("application/json",)
    )
    outcome, record = await webhooks.receive(
        body, {k.lower(): v for k, v in request.headers.items()}
    )
    return JsonResponse({"status": outcome, "outcome": record.outcome if record else None})


# What a recording may be: its content type, and how its first bytes must look.
RECORDING_TYPES = {
    "audio/webm": ("webm", lambda head: head.startswith(b"\x1a\x45\xdf\xa3")),
    "audio/ogg": ("ogg", lambda head: head.startswith(b"OggS")),
    "audio/mp4": ("m4a", lambda head: head[4:8] == b"ftyp"),
    "audio/wav": ("wav", lambda head: head.startswith(b"RIFF") and head[8:12] == b"WAVE"),
}


@api_view("POST")
async def upload_recording(request: HttpRequest, session_id: str) -> JsonResponse:
    audio = read_body(
        request, max_bytes=settings.RECORDING_MAX_BYTES, content_types=tuple(RECORDING_TYPES)
    )
    extension, looks_right = RECORDING_TYPES.get(request.content_type, ("", None))
    if not audio or looks_right is None or not looks_right(audio[:16]):
        raise BadRequest(
            "The body is not a recording (webm, ogg, m4a or wav audio).", code="invalid_recording"
        )
    session = await callers.session_for_token(request, session_id)
    await actions.store_recording(session, audio, extension)
    return JsonResponse({"session_id": session.pk, "bytes": len(audio)}, status=201)
