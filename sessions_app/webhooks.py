"""Signed webhooks from OpenAI (Standard Webhooks): verify, record once, act."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import re
import weakref
from concurrent.futures import ThreadPoolExecutor

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, close_old_connections
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
    record = WebhookEvent(
        webhook_id=webhook_id,
        webhook_key=WebhookEvent.key_of(webhook_id),
        event_type=event["type"][:80],
        payload=event,
    )
    if event["type"] != "realtime.call.incoming":
        # Only an incoming call is acted on; any other event is recorded, in one write
        # shared with the deliveries that arrive meanwhile.
        record.outcome = "recorded"
        if not await _recorder().record(record):
            return "duplicate", None
        return "accepted", record
    try:
        await record.asave(force_insert=True)
    except IntegrityError:
        return "duplicate", None
    try:
        record.outcome = await _incoming_call(record, event.get("data") or {})
    except Exception as exc:
        count_error("webhooks", type(exc).__name__)
        await record.adelete()
        raise
    await record.asave(update_fields=["outcome", "session", "updated_at"])
    return "accepted", record


class _Recorder:
    """Records events in batches (a group commit): while one batch is being written,
    the deliveries arriving meanwhile gather and go in the next INSERT. A lone delivery
    waits for no one; concurrent ones share a statement and a thread hop instead of
    paying one each. Whether a delivery is new is the database's answer (its unique
    webhook_key), as it is for a single insert."""

    BATCH = 100

    def __init__(self) -> None:
        self.waiting: list[tuple[WebhookEvent, asyncio.Future[bool]]] = []
        self.writer: asyncio.Future | None = None

    async def record(self, event: WebhookEvent) -> bool:
        """True once event is stored, False if its webhook-id already was."""
        stored = asyncio.get_running_loop().create_future()
        self.waiting.append((event, stored))
        if self.writer is None:
            # A task of its own, outside this request's context (its log fields, its
            # trace): a delivery whose sender goes away cancels only its own wait.
            self.writer = asyncio.get_running_loop().create_task(
                self._write(), context=contextvars.Context()
            )
        return await stored

    async def _write(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[: self.BATCH], self.waiting[self.BATCH :]
                await self._write_batch(batch)
        finally:
            self.writer = None

    async def _write_batch(self, batch: list[tuple[WebhookEvent, asyncio.Future[bool]]]) -> None:
        first: dict[str, WebhookEvent] = {}
        for event, _ in batch:
            first.setdefault(event.webhook_key, event)
        try:
            inserted = await sync_to_async(_insert_new, thread_sensitive=False, executor=_WRITER)(
                list(first.values())
            )
        except Exception as exc:
            if len(first) == 1 or isinstance(exc, OperationalError | InterfaceError):
                # The database is away, or refused this one event: its senders hear so.
                for _, stored in batch:
                    if not stored.done():
                        stored.set_exception(exc)
                return
            # One event the database refuses must not fail the others: each id alone.
            for key in first:
                await self._write_batch([item for item in batch if item[0].webhook_key == key])
            return
        except BaseException:  # cancelled: the loop is closing
            for _, stored in batch:
                stored.cancel()
            raise
        for event, stored in batch:
            new = event is first[event.webhook_key] and event.webhook_key in inserted
            if new:
                event.pk = inserted[event.webhook_key]
            if not stored.done():
                stored.set_result(new)


# The recorders' own thread: their writes outlive the request that started them, so
# not on that request's thread.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-writer")


def _insert_new(events: list[WebhookEvent]) -> dict[str, int]:
    # As Django does around each request: a connection that died since the last batch
    # is dropped, and a pooled one goes back to the pool.
    close_old_connections()
    try:
        return WebhookEvent.objects.insert_new(events)
    finally:
        close_old_connections()


_recorders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Recorder] = (
    weakref.WeakKeyDictionary()
)


def _recorder() -> _Recorder:
    """The running event loop's recorder (its futures belong to that loop)."""
    loop = asyncio.get_running_loop()
    recorder = _recorders.get(loop)
    if recorder is None:
        recorder = _recorders[loop] = _Recorder()
    return recorder


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
