"""Sessions exported for support staff: metadata, ordered transcript and tool calls, as
JSON Lines (one session a line) or CSV (one row per transcript entry or tool call).

Both are generators of encoded chunks that read sessions a chunk at a time, each chunk
with its items and tool calls, so an export holds one chunk in memory however many
sessions it covers (bench/export_memory.py measures it). The per-session
transcript files (transcripts.py) are separate and stay as they are.
"""

from __future__ import annotations

import datetime
import heapq
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.handlers.asgi import ASGIRequest
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from ops_app import audit
from sessions_app.models import ConversationItem, VoiceSession
from tools_app.models import ToolExecution, shown_arguments
from voiceplatform.api import client_ip
from voiceplatform.spreadsheet import cell, row_writer

# Sessions read per round trip, each round trip with one query for their items and one
# for their tool calls: what bounds both the memory and the number of queries.
CHUNK_SIZE = 200
# What one hop from the event loop to the database thread brings back (ASGI).
BLOCK_BYTES = 64 * 1024

ITEM_FIELDS = (
    "item_id",
    "kind",
    "role",
    "status",
    "text",
    "name",
    "call_id",
    "arguments",
    "source",
    "created_at",
)
TOOL_CALL_FIELDS = (
    "call_id",
    "tool",
    "status",
    "origin",
    "arguments",
    "output",
    "error",
    "worker",
    "duration_seconds",
    "created_at",
    "started_at",
    "finished_at",
)
# A tool call's arguments are read cut to a bound in the database (ToolExecution's
# with_arguments_shown): the object itself when it is short, else its first characters.
SHOWN_FIELDS = tuple(name for name in TOOL_CALL_FIELDS if name != "arguments") + (
    "arguments_head",
    "arguments_chars",
)
# Who started the session, in words, besides the ids among the fields.
CALLER_KEYS = ("user", "api_key_name", "caller")
# Long configuration that would repeat on every row of the CSV: the JSON Lines carry it,
# the CSV names the tools only.
CSV_LEFT_OUT = ("instructions", "tools", "audio_stats")
# One row per transcript entry or tool call, in the order they happened.
CSV_ENTRY_COLUMNS = (
    "entry",
    "created_at",
    "role",
    "kind",
    "status",
    "name",
    "call_id",
    "text",
    "arguments",
    "output",
    "error",
    "duration_seconds",
    "started_at",
    "finished_at",
    "origin",
    "source",
    "worker",
    "item_id",
)


def session_fields() -> list[models.Field]:
    """Every stored field of a session but its files: fields added later are exported
    too. Relations appear as their ids (user_id, api_key_id)."""
    return [
        field
        for field in VoiceSession._meta.concrete_fields
        if not isinstance(field, models.FileField)
    ]


def jsonl_chunks(queryset: QuerySet[VoiceSession]) -> Generator[bytes, None, None]:
    """One JSON object a line per session: its fields, the caller, `items` (the
    transcript in order) and `tool_calls`."""
    for session, items, tool_calls in _sessions(queryset):
        record = {**session, "items": items, "tool_calls": tool_calls}
        yield (json.dumps(record, ensure_ascii=False, default=_json_value) + "\n").encode()


def csv_chunks(queryset: QuerySet[VoiceSession]) -> Generator[bytes, None, None]:
    """One row per transcript entry or tool call, oldest first, each with its session's
    columns (session_*), so a spreadsheet can filter and sort them; a session with
    neither has one row of its own. Starts with a byte order mark, by which Excel knows
    the file is UTF-8."""
    keys = [f.attname for f in session_fields() if f.name not in CSV_LEFT_OUT]
    keys += [*CALLER_KEYS, "tool_names"]
    writer = row_writer()
    header = [f"session_{key}" for key in keys] + list(CSV_ENTRY_COLUMNS)
    yield ("\ufeff" + writer.writerow(header)).encode()
    for session, items, tool_calls in _sessions(queryset):
        tools = session["tools"] if isinstance(session["tools"], list) else []
        session["tool_names"] = " ".join(
            str(tool.get("name", "")) for tool in tools if isinstance(tool, dict)
        )
        columns = [_csv_value(session[key]) for key in keys]
        rows = [
            columns + [_csv_value(entry.get(column)) for column in CSV_ENTRY_COLUMNS]
            for entry in _entries(items, tool_calls)
        ]
        rows = rows or [columns + [""] * len(CSV_ENTRY_COLUMNS)]
        yield "".join(writer.writerow(row) for row in rows).encode()


@dataclass(frozen=True)
class Format:
    content_type: str
    extension: str
    chunks: Callable[[QuerySet[VoiceSession]], Generator[bytes, None, None]]


FORMATS = {
    "jsonl": Format("application/x-ndjson; charset=utf-8", "jsonl", jsonl_chunks),
    "csv": Format("text/csv; charset=utf-8", "csv", csv_chunks),
}


def download(
    request: HttpRequest, queryset: QuerySet[VoiceSession], format_name: str
) -> StreamingHttpResponse:
    """The selected sessions (with the admin's "select all", every one its filters
    select) as a download in format_name, written as it is sent. The audit log keeps
    who took which, and how many.

    Under ASGI the chunks come through an async iterator (Django reads a plain one
    whole before sending a byte), the queries and the encoding running in the request's
    thread, off the event loop."""
    _audit(request, queryset, format_name)
    chosen = FORMATS[format_name]
    chunks = chosen.chunks(queryset)
    content = _blocks(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type=chosen.content_type)
    filename = f"sessions-{timezone.now():%Y%m%d-%H%M%S}.{chosen.extension}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _audit(request: HttpRequest, queryset: QuerySet[VoiceSession], format_name: str) -> None:
    details: dict[str, Any] = {"format": format_name, "sessions": queryset.count()}
    if request.POST.get("select_across") == "1":
        details["filters"] = request.GET.urlencode()
    else:  # one page's selection: at most the admin's list_max_show_all ids
        details["ids"] = list(queryset.values_list("pk", flat=True))
    audit.record(
        audit.Action.EXPORT,
        actor=request.user,
        target=f"{VoiceSession._meta.label_lower} ({details['sessions']} sessions)",
        ip=client_ip(request),
        details=details,
    )


Row = dict[str, Any]


def _sessions(queryset: QuerySet[VoiceSession]) -> Iterator[tuple[Row, list[Row], list[Row]]]:
    """Each selected session, oldest first, as (its fields and caller, its items in
    order, its tool calls in order). Sessions are read CHUNK_SIZE at a time from a
    server-side cursor, each chunk's items and tool calls with one query each; plain
    rows, not model instances, as there are many of them."""
    fields = [field.attname for field in session_fields()]
    username = f"user__{get_user_model().USERNAME_FIELD}"
    # Only which sessions the admin selected is taken from its queryset; whatever the
    # list added to show them (annotations, joins for search, distinct) is left behind.
    rows = (
        VoiceSession.objects.filter(pk__in=queryset.values("pk"))
        .order_by("created_at", "pk")
        .values(*fields, username, "api_key__name")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    while chunk := list(islice(rows, CHUNK_SIZE)):
        ids = [row["id"] for row in chunk]
        items = _by_session(ConversationItem.objects.all(), ids, ITEM_FIELDS)
        tool_calls = _by_session(ToolExecution.objects.with_arguments_shown(), ids, SHOWN_FIELDS)
        for row in chunk:
            user, key_name = row.pop(username), row.pop("api_key__name")
            row["user"], row["api_key_name"] = user, key_name
            if user is not None:
                row["caller"] = f"user {user}"
            elif key_name is not None:
                row["caller"] = f"API key {key_name}"
            else:
                row["caller"] = f"anonymous {row['client_ip'] or ''}".strip()
            yield row, items.pop(row["id"], []), tool_calls.pop(row["id"], [])


def _by_session(queryset: QuerySet, ids: list[str], names: tuple[str, ...]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = defaultdict(list)
    rows = (
        queryset.filter(session_id__in=ids)
        .order_by("created_at", "id")
        .values_list("session_id", *names)
    )
    for session_id, *values in rows:
        row = dict(zip(names, values, strict=True))
        if "arguments_head" in row:
            row["arguments"] = shown_arguments(
                row.pop("arguments_head"), row.pop("arguments_chars")
            )
        grouped[session_id].append(row)
    return grouped


def _entries(items: list[Row], tool_calls: list[Row]) -> Iterator[Row]:
    """A session's items and tool calls merged by time (an item first on a tie)."""
    return heapq.merge(
        ({**item, "entry": "item"} for item in items),
        ({**run, "entry": "tool_call", "name": run["tool"]} for run in tool_calls),
        key=lambda entry: entry["created_at"],
    )


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)  # Decimal, UUID and the like


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return cell(value)
    if isinstance(value, dict | list):
        return cell(json.dumps(value, ensure_ascii=False, sort_keys=True))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


async def _blocks(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    take = sync_to_async(_next_block, thread_sensitive=True)
    try:
        while block := await take(chunks):
            yield block
    finally:
        # Closes the server-side cursor of an export cut short, in its own thread.
        await sync_to_async(chunks.close, thread_sensitive=True)()


def _next_block(chunks: Iterator[bytes]) -> bytes:
    block = bytearray()
    for chunk in chunks:
        block += chunk
        if len(block) >= BLOCK_BYTES:
            break
    return bytes(block)
