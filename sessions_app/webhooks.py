"""Signed webhooks from OpenAI (Standard Webhooks): verify, record once, act."""

from __future__ import annotations

import structlog
from django.conf import settings
from django.db import IntegrityError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ops_app import audit
from ops_app.models import AuditEvent
from sessions_app import actions
from sessions_app.models import WebhookEvent
from voiceplatform.api import client_network, parse_json
from voiceplatform.errors import BadRequest, ErrorCode

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
        raise BadRequest("The webhook body is not an event.", code=ErrorCode.INVALID_WEBHOOK)
    raise BadRequest("The webhook signature is not valid.", code=ErrorCode.INVALID_SIGNATURE)


async def receive(
    body: bytes, headers: dict[str, str], *, ip: str | None = None
) -> tuple[str, WebhookEvent | None]:
    """Returns ("accepted" | "duplicate", record). Work is done once per webhook-id; if
    it fails, the record is dropped so the sender's retry does it again. A bad signature
    is audited, once per sender address in a window (anyone can post garbage)."""
    try:
        event = verify(body, headers)
    except BadRequest as exc:
        if exc.code == ErrorCode.INVALID_SIGNATURE:
            await audit.record_once_per_window(
                AuditEvent.Action.WEBHOOK_REFUSED,
                # An IPv6 sender counts by its /64, as the rate limits count it.
                client_network(ip) or "unknown",
                settings.AUDIT_REFUSAL_WINDOW_SECONDS,
                target="webhook openai",
                ip=ip,
                details={
                    "code": str(exc.code),
                    "webhook_id": headers.get("webhook-id", "")[:200],
                },
            )
        raise
    webhook_id = headers.get("webhook-id", "")
    try:
        record = await WebhookEvent.objects.acreate(
            webhook_id=webhook_id,
            webhook_key=WebhookEvent.key_of(webhook_id),
            event_type=event["type"][:80],
            payload=event,
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
    outcome, record.session = await actions.accept_incoming_call(call_id, caller_id=_sip_from(data))
    return outcome


def _sip_from(data: dict) -> str:
    headers = data.get("sip_headers")
    for header in headers if isinstance(headers, list) else []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "from":
            return f"sip {header.get('value', '')}"
    return "sip"
