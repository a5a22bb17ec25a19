"""Signed webhooks from OpenAI (Standard Webhooks): verify, record once, act."""

from __future__ import annotations

from datetime import timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ops_app import degradation
from sessions_app import actions, realtime, sideband
from sessions_app.callers import Caller
from sessions_app.models import VoiceSession, WebhookEvent
from voiceplatform.api import parse_json
from voiceplatform.errors import BadRequest, ServiceUnavailable

log = structlog.get_logger(__name__)


def verify(body: bytes, headers: dict[str, str]) -> dict:
    """The event, if any configured secret signed it within the last 300 s (several
    secrets during rotation, several signatures per header); otherwise 400."""
    for secret in settings.OPENAI_WEBHOOK_SECRETS:
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError, TypeError):
            continue
        event = parse_json(body)
        if (
            isinstance(event, dict)
            and isinstance(event.get("type"), str)
            and isinstance(event.get("data", {}), dict)
        ):
            return event
        raise BadRequest("The webhook body is not an event.", code="invalid_event")
    raise BadRequest("The webhook signature is not valid.", code="invalid_signature")


async def receive(body: bytes, headers: dict[str, str]) -> tuple[str, WebhookEvent | None]:
    """Returns ("accepted" | "duplicate", record). Work is done once per webhook-id; if
    it fails, the record is dropped so the sender's retry does it again."""
    event = verify(body, headers)
    webhook_id = headers.get("webhook-id", "")[:120]
    try:
        record = await WebhookEvent.objects.acreate(
            webhook_id=webhook_id, event_type=event["type"][:80], payload=event
        )
    except IntegrityError:
        return "duplicate", None
    try:
        record.outcome = await _handle(record, event)
    except Exception:
        await record.adelete()
        raise
    await record.asave(update_fields=["outcome", "session", "updated_at"])
    return "accepted", record


async def _handle(record: WebhookEvent, event: dict) -> str:
    if event["type"] == "realtime.call.incoming":
        return await _incoming_call(record, event.get("data") or {})
    return "recorded"


async def _incoming_call(record: WebhookEvent, data: dict) -> str:
    """A SIP call rings: accept it with our session config, or reject it."""
    call_id = data.get("call_id")
    if not isinstance(call_id, str) or not 0 < len(call_id) <= 80:
        return "ignored: no usable call_id"
    level = await degradation.current_level()
    live = await VoiceSession.objects.live().filter(pod=settings.POD_NAME).acount()
    if level >= degradation.MAINTENANCE or live >= settings.SESSION_CAPACITY:
        reason = "maintenance" if level >= degradation.MAINTENANCE else "at_capacity"
        await realtime.reject_call(call_id, status_code=486 if reason == "at_capacity" else 503)
        return f"rejected: {reason}"
    now = timezone.now()
    session, _ = await VoiceSession.objects.aget_or_create(
        call_id=call_id,
        defaults={
            "source": VoiceSession.Source.SIP,
            "model": settings.OPENAI_MODEL,
            "voice": settings.OPENAI_DEFAULT_VOICE,
            "instructions": actions.session_instructions(None, level),
            # A phone caller is anonymous.
            "tools": await actions.session_tools(Caller(), level),
            "pod": settings.POD_NAME,
            "degradation_level": level,
            "expires_at": now + timedelta(seconds=settings.SESSION_MAX_SECONDS),
            "user_agent": _sip_from(data)[:300],
        },
    )
    record.session = session
    try:
        await realtime.accept_call(call_id, actions.config_of(session))
    except realtime.UpstreamError as exc:
        if exc.status in (502, 503, 504) and exc.code != "upstream_refused":
            # Transient: answer 503 so the sender tries again.
            raise ServiceUnavailable("Could not accept the call.", retry_after=5) from exc
        # Refused for good (the caller hung up, the call is unknown): nothing to retry.
        await actions.end_session(
            session, reason="accept_refused", status=VoiceSession.Status.FAILED
        )
        return f"failed: {exc.code}"
    session.status = VoiceSession.Status.ACTIVE
    session.connected_at = timezone.now()
    await session.asave(update_fields=["status", "connected_at", "updated_at"])
    if settings.SIDEBAND_ENABLED:
        sideband.attach(session.pk, call_id)
    return "accepted"


def _sip_from(data: dict) -> str:
    headers = data.get("sip_headers")
    for header in headers if isinstance(headers, list) else []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "from":
            return f"sip {header.get('value', '')}"
    return "sip"
