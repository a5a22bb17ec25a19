"""Realtime events -> conversation items: ordered, deduplicated by item id, finals win.

The same events arrive from the sideband and from the browser's relay; applying one
twice changes nothing.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError
from django.db.models import Count, F, Sum
from django.db.models.functions import Coalesce, Least, Length

from ops_app import metrics
from sessions_app import costs, events
from sessions_app.models import ConversationItem as Item
from sessions_app.models import VoiceSession
from voiceplatform import redaction
from voiceplatform.errors import Conflict, ErrorCode

_FINAL = Item.Status.COMPLETED

MAX_TOKENS_PER_RESPONSE = 10_000_000
MAX_TEXT = 100_000
# What a browser may claim when no server sideband ever measured the call: a realtime
# response's input is at most its context window, and a session lives 15 minutes.
CLIENT_TOKENS_PER_RESPONSE = 100_000
CLIENT_TOKENS_PER_SESSION = 3_000_000


def short(value, limit: int = 80) -> str:
    """A string id or name from an event, cut to what we store."""
    return value[:limit] if isinstance(value, str) else ""


def _text(value) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def _text_of(content) -> str:
    parts = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict):
            text = part.get("text") or part.get("transcript")
            if isinstance(text, str):
                parts.append(text)
    return " ".join(parts).strip()


def _fields_of_item(item: dict) -> dict:
    kind = item.get("type")
    status = _FINAL if item.get("status") == "completed" else Item.Status.IN_PROGRESS
    if kind == "function_call":
        return {
            "kind": Item.Kind.FUNCTION_CALL,
            "role": Item.Role.ASSISTANT,
            "name": short(item.get("name")),
            "call_id": short(item.get("call_id")),
            "arguments": _text(item.get("arguments")),
            "status": status,
        }
    if kind == "function_call_output":
        return {
            "kind": Item.Kind.FUNCTION_CALL_OUTPUT,
            "role": Item.Role.TOOL,
            "call_id": short(item.get("call_id")),
            "text": _text(item.get("output")),
            "status": _FINAL,
        }
    role = item.get("role") if item.get("role") in Item.Role.values else Item.Role.ASSISTANT
    fields = {"kind": Item.Kind.MESSAGE, "role": role, "status": status}
    text = _text(_text_of(item.get("content")))
    if text:
        fields["text"] = text
    elif status == _FINAL and role == Item.Role.USER:
        # A finished user audio item waits for its transcription to be final.
        fields["status"] = Item.Status.IN_PROGRESS
    return fields


def changes_for(event: dict) -> tuple[str, dict] | None:
    """(item_id, fields) that an event tells us, or None for events without transcript."""
    kind = event.get("type")
    if kind in events.ITEM_EVENTS:
        item = event.get("item")
        if isinstance(item, dict) and short(item.get("id")):
            return short(item["id"]), _fields_of_item(item)
        return None
    item_id = short(event.get("item_id"))
    if not item_id:
        return None
    if kind == events.USER_AUDIO_COMMITTED:
        return item_id, {"kind": Item.Kind.MESSAGE, "role": Item.Role.USER}
    if kind == events.USER_TRANSCRIPT_DONE:
        return item_id, {
            "role": Item.Role.USER,
            "text": str(event.get("transcript") or ""),
            "status": _FINAL,
        }
    if kind == events.USER_TRANSCRIPT_FAILED:
        return item_id, {"role": Item.Role.USER, "status": Item.Status.FAILED}
    if kind in events.ASSISTANT_TEXT_DONE:
        text = event.get("transcript") if "transcript" in event else event.get("text")
        return item_id, {"role": Item.Role.ASSISTANT, "text": _text(text), "status": _FINAL}
    return None


def relevant(realtime_events: list[dict]) -> list[dict]:
    """The events that say something about the transcript or its usage."""
    return [
        event
        for event in realtime_events
        if (event.get("type") == events.RESPONSE_DONE and isinstance(event.get("response"), dict))
        or changes_for(event) is not None
    ]


def merge(item: Item, fields: dict, source: str) -> list[str]:
    """Applies what is new; a final item keeps its final text and status, except that
    what the server saw itself (sideband) corrects what a browser relayed."""
    corrects = source == Item.Source.SIDEBAND and item.source == Item.Source.CLIENT
    changed = []
    for name, value in fields.items():
        current = getattr(item, name)
        if value in ("", None) or current == value:
            continue
        if item.status == _FINAL and name in ("text", "status") and not corrects:
            continue
        setattr(item, name, value)
        changed.append(name)
    if corrects and changed:
        item.source = source
        changed.append("source")
    return changed


async def _apply_item(session_id: str, item_id: str, fields: dict, source: str) -> Item | None:
    defaults = {"role": Item.Role.ASSISTANT, **fields, "source": source}
    try:
        item, created = await Item.objects.aget_or_create(
            session_id=session_id, item_id=item_id, defaults=defaults
        )
    except IntegrityError:
        item, created = await Item.objects.aget(session_id=session_id, item_id=item_id), False
    if created:
        return item
    changed = merge(item, fields, source)
    if not changed:
        return None
    await item.asave(update_fields=[*changed, "updated_at"])
    return item


def _token_count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(value, 0), MAX_TOKENS_PER_RESPONSE)


# How long a response's usage is remembered as counted (both doors may report it).
USAGE_KEY_SECONDS = 86400


def usage_key(session_id: str, response_id: str) -> str:
    return f"usage:{session_id}:{response_id}"


def usage_counts(usage: dict, per_response: int) -> tuple[dict, costs.Usage]:
    """A response's token counts (each capped at per_response) and its usage by kind."""
    counts = {
        name: min(_token_count(usage.get(name)), per_response)
        for name in ("input_tokens", "output_tokens", "total_tokens")
    }
    return counts, costs.usage_of(usage).capped(per_response)


async def _count_usage(session_id: str, response: dict, *, claimed: bool) -> None:
    """Adds a response's token usage and its cost once. A browser's claim (claimed) is
    capped per response and per session: it measures nothing, so it may not run up a
    bill."""
    usage = response.get("usage")
    response_id = short(response.get("id"))
    if not isinstance(usage, dict) or not response_id:
        return
    per_response = CLIENT_TOKENS_PER_RESPONSE if claimed else MAX_TOKENS_PER_RESPONSE
    counts, kinds = usage_counts(usage, per_response)
    # Both doors may report the same response: count it once.
    if not await cache.aadd(usage_key(session_id, response_id), 1, timeout=USAGE_KEY_SECONDS):
        return
    model = (
        await VoiceSession.objects.filter(pk=session_id).values_list("model", flat=True).afirst()
    )
    if model is None:
        return
    cost = costs.cost(model, kinds)
    counts.update(kinds.counts())
    if claimed:
        added = {
            name: Least(F(name) + value, CLIENT_TOKENS_PER_SESSION)
            for name, value in counts.items()
        }
        most = costs.cost(model, costs.Usage(output_audio_tokens=CLIENT_TOKENS_PER_SESSION))
        added["cost_usd"] = Least(F("cost_usd") + cost, most)
    else:
        added = {name: F(name) + value for name, value in counts.items()}
        added["cost_usd"] = F("cost_usd") + cost
    if await VoiceSession.objects.filter(pk=session_id).aupdate(**added):
        metrics.voice_session_cost_usd_total.labels(model=model).inc(float(cost))


async def check_room(session_id: str) -> None:
    """409 when the session's transcript already holds what a relay may store."""
    held = await Item.objects.filter(session_id=session_id).aaggregate(
        items=Count("pk"),
        chars=Coalesce(Sum(Length("text") + Length("arguments")), 0),
    )
    if (
        held["items"] >= settings.SESSION_TRANSCRIPT_MAX_ITEMS
        or held["chars"] >= settings.SESSION_TRANSCRIPT_MAX_CHARS
    ):
        raise Conflict(
            "This session's transcript is full; nothing more is stored for it.",
            code=ErrorCode.TRANSCRIPT_FULL,
        )


def live_fields(item: Item) -> dict:
    return {
        "item_id": item.item_id,
        "kind": item.kind,
        "role": item.role,
        "status": item.status,
        "text": item.text,
        "name": item.name,
        "call_id": item.call_id,
        "arguments": item.arguments,
    }


async def apply_events(
    session_id: str, realtime_events: list[dict], *, source: str, count_usage: bool = True
) -> int:
    """Records what the events say about the transcript; returns how many items changed.
    count_usage is off for browser relays once the server has had its own sideband:
    usage is then what the server measured, not what a client claims."""
    changed = 0
    for event in realtime_events:
        if event.get("type") == events.RESPONSE_DONE and isinstance(event.get("response"), dict):
            if count_usage:
                await _count_usage(
                    session_id, event["response"], claimed=source == Item.Source.CLIENT
                )
            continue
        found = changes_for(event)
        if found is None:
            continue
        item_id, fields = found
        # Text is redacted as it is stored; a call's arguments once the session is over
        # (redact_call_arguments): a holder taking over runs unanswered calls from them.
        fields = redaction.redact_fields(fields)
        item = await _apply_item(session_id, item_id, fields, source=source)
        if item is not None:
            changed += 1
            await events.publish(session_id, events.LiveEvent.TRANSCRIPT_ITEM, **live_fields(item))
    return changed


def redact_call_arguments(session_id: str) -> int:
    """Redacts the arguments of an ended session's function calls, as their text was
    when stored; returns how many changed."""
    changed = 0
    calls = Item.objects.filter(session_id=session_id, kind=Item.Kind.FUNCTION_CALL)
    for item in calls.exclude(arguments="").only("pk", "arguments"):
        redacted = redaction.redact(item.arguments)
        if redacted != item.arguments:
            changed += Item.objects.filter(pk=item.pk).update(arguments=redacted)
    return changed


def export(items: list[Item]) -> tuple[str, str]:
    """The transcript as (JSON, plain text)."""
    entries = [
        {
            "item_id": item.item_id,
            "kind": item.kind,
            "role": item.role,
            "status": item.status,
            "text": item.text,
            "name": item.name,
            "call_id": item.call_id,
            "arguments": item.arguments,
            "at": item.created_at.isoformat(),
        }
        for item in items
    ]
    lines = []
    for item in items:
        if item.kind == Item.Kind.FUNCTION_CALL:
            lines.append(f"[{item.role}] called {item.name}({item.arguments})")
        elif item.kind == Item.Kind.FUNCTION_CALL_OUTPUT:
            lines.append(f"[tool] {item.text}")
        elif item.text:
            lines.append(f"[{item.role}] {item.text}")
    return json.dumps(entries, indent=2), "\n".join(lines) + "\n"
