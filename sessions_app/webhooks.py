"""Signed webhooks from OpenAI (Standard Webhooks): verify, record once, act."""

from __future__ import annotations

import base64
import binascii
import re

import structlog
from django.conf import settings
from django.db import IntegrityError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ops_app import audit, ratelimit
from ops_app.metrics import count_error
from ops_app.models import AuditEvent
from sessions_app import actions
from sessions_app.models import WebhookEvent
from voiceplatform.api import client_network, parse_json
from voiceplatform.errors import BadRequest, ErrorCode

log = structlog.get_logger(__name__)


# Unix seconds as a sender writes them: plain digits, no sign, point or leading zero.
_TIMESTAMP = re.compile(r"[1-9][0-9]{0,11}")
_SIGNATURE_BYTES = 32  # HMAC-SHA256


def signed_headers(headers: dict[str, str]) -> dict[str, str]:
    """The Standard Webhooks headers in the one form a signer writes them, or 400.

    webhook-signature keeps only its well-formed `v1,<base64>` entries (others, such as
    a future version, are skipped rather than spoiling the valid one next to them), and
    base64 only as written (no stray characters or padding the decoder would drop), so
    a header that verifies cannot be altered and still verify."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = [
        entry for entry in headers.get("webhook-signature", "").split() if _is_v1_signature(entry)
    ]
    if not webhook_id or not _TIMESTAMP.fullmatch(timestamp) or not signatures:
        raise BadRequest("The webhook signature is not valid.", code=ErrorCode.INVALID_SIGNATURE)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": " ".join(signatures),
    }


def _is_v1_signature(entry: str) -> bool:
    version, _, encoded = entry.partition(",")
    if version != "v1":
        return False
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == _SIGNATURE_BYTES and base64.b64encode(raw).decode() == encoded


def verify(body: bytes, headers: dict[str, str]) -> dict:
    """The event, if any configured secret signed it within the last 300 s (several
    secrets during rotation, several signatures per header); otherwise 400. headers are
    the request's, names in lower case."""
    signed = signed_headers(headers)
    for secret in settings.OPENAI_WEBHOOK_SECRETS:
        try:
            Webhook(secret).verify(body, signed, json_parse=False)
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
    if network := client_network(ip):
        await ratelimit.hit(f"webhook:{network}", settings.WEBHOOK_RATE_PER_MINUTE)
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
    # Only an incoming call is acted on; any other event is recorded, in one write.
    incoming = event["type"] == "realtime.call.incoming"
    try:
        record = await WebhookEvent.objects.acreate(
            webhook_id=webhook_id,
            webhook_key=WebhookEvent.key_of(webhook_id),
            event_type=event["type"][:80],
            payload=event,
            outcome="" if incoming else "recorded",
        )
    except IntegrityError:
        return "duplicate", None
    if not incoming:
        return "accepted", record
    try:
        record.outcome = await _incoming_call(record, event.get("data") or {})
    except Exception as exc:
        count_error("webhooks", type(exc).__name__)
        await record.adelete()
        raise
    await record.asave(update_fields=["outcome", "session", "updated_at"])
    return "accepted", record


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
