"""The transcript writer of the calls this process holds: what their sidebands say is
written in batches, not an event at a time.

A held call's listener hands each event that says something about the transcript to
`record()` and reads on; one writer per process takes everything handed in since its
last pass (a pass every FLUSH_SECONDS at most) and writes it with a few statements: one
read of the items the batch touches, one insert of the new ones, one update per shape
of change, one usage update per session that had a response. A thousand talking calls
cost a few statements a pass, not several per event.

What `transcripts.apply_events` decides for one event holds for a batch: events apply
in the order each call received them, an item is keyed by its session and upstream id,
final text and status win, usage counts once per response (the same cache key). A new
item's created_at is when its first event arrived, so the transcript's order is the
call's, whatever the batch. While the database is away (or older journal ops wait) the
batch goes to the journal, as one op per session, like any other write (journal.py).

Nothing handed in is dropped: when the writer falls behind, `record()` waits for room
(the listener then reads its socket more slowly), and a batch that fails for another
reason is written again event by event, each event on its own."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections, transaction
from django.utils import timezone

from ops_app import metrics
from ops_app.metrics import count_error
from sessions_app import costs, events, journal, transcripts
from sessions_app.models import ConversationItem as Item
from sessions_app.models import VoiceSession
from voiceplatform import aredis, redaction

log = structlog.get_logger(__name__)

SOURCE = Item.Source.SIDEBAND
_threads: list[ThreadPoolExecutor] = []


def _thread() -> ThreadPoolExecutor:
    """The writer's own thread: batches are written one after another, never on a
    request's thread nor a held call's."""
    if not _threads:
        _threads.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder"))
    return _threads[0]


@dataclass
class _Batch:
    """What was handed in since the last pass: per session, its events in order, each
    with when it arrived; and the future of its writing."""

    events: dict[str, list[tuple[datetime, dict]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    count: int = 0
    written: asyncio.Future | None = None


class Recorder:
    """One per event loop (the process's): the batch being filled and its writer."""

    def __init__(self) -> None:
        self.batch = _Batch()
        self.wake = asyncio.Event()  # something was handed in
        self.full = asyncio.Event()  # the batch holds SIDEBAND_RECORD_BATCH_MAX events
        self.room = asyncio.Event()  # the batch takes more
        self.room.set()
        self.writer: asyncio.Task | None = None

    def add(self, session_id: str, realtime_events: list[dict]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        batch = self.batch
        now = timezone.now()
        batch.events[session_id].extend((now, event) for event in realtime_events)
        batch.count += len(realtime_events)
        if batch.written is None:
            batch.written = loop.create_future()
        if batch.count >= settings.SIDEBAND_RECORD_BATCH_MAX:
            self.full.set()
            self.room.clear()
        self.wake.set()
        if self.writer is None or self.writer.done():
            # Its own context: not the call's whose event happened to start it.
            self.writer = loop.create_task(
                self._write(), name="transcript-recorder", context=contextvars.Context()
            )
        return batch.written

    async def _write(self) -> None:
        while True:
            await self.wake.wait()
            # The batch gathers for a moment (unless it fills up first).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.full.wait(), settings.SIDEBAND_RECORD_SECONDS)
            self.wake.clear()
            self.full.clear()
            batch, self.batch = self.batch, _Batch()
            self.room.set()
            try:
                await write(batch.events)
            finally:
                if batch.written is not None and not batch.written.done():
                    batch.written.set_result(None)


_recorders: dict[asyncio.AbstractEventLoop, Recorder] = {}


async def record(session_id: str, realtime_events: list[dict]) -> asyncio.Future | None:
    """Hands a held call's events to the writer; returns the future of the batch they
    are in (done once written or journaled), None when none of them says anything about
    the transcript. Waits first while the writer is a full batch behind."""
    relevant = transcripts.relevant(realtime_events)
    if not relevant:
        return None
    loop = asyncio.get_running_loop()
    recorder = _recorders.get(loop)
    if recorder is None:
        for closed in [other for other in _recorders if other.is_closed()]:
            del _recorders[closed]
        recorder = _recorders[loop] = Recorder()
    while not recorder.room.is_set():
        if recorder.writer is None or recorder.writer.done():  # it died: room again
            recorder.room.set()
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.room.wait(), 1.0)
    return recorder.add(session_id, relevant)


async def write(batch: dict[str, list[tuple[datetime, dict]]]) -> None:
    """Writes one batch: to the database, or to the journal while it is away."""
    counted: frozenset[tuple[str, str]] = frozenset()
    try:
        if await journal.deferring():
            await _journal(batch)
            return
        if connection.vendor != "postgresql":  # the embedded default: one call at a time
            await _one_by_one(batch)
            return
        counted = await _claim_usage(batch)
        try:
            changed, costs_by_model = await asyncio.get_running_loop().run_in_executor(
                _thread(), _write_rows, batch, counted
            )
        except journal.UNREACHABLE as exc:
            journal.went_away(exc)
            await _journal(batch, counted)
            return
    except Exception as exc:  # one bad event must not cost the batch: each on its own
        log.warning("transcript_batch_failed", error=f"{type(exc).__name__}: {exc}"[:200])
        count_error("sideband", "transcript_batch_failed")
        await _unclaim(counted)  # counted again, event by event
        await _one_by_one(batch)
        return
    for model, cost in costs_by_model.items():
        metrics.voice_session_cost_usd_total.labels(model=model).inc(float(cost))
    by_session = defaultdict(list)
    for session_id, item in changed:
        by_session[session_id].append(transcripts.live_fields(item))
    await events.publish_many(events.LiveEvent.TRANSCRIPT_ITEM, by_session)


async def _unclaim(counted: frozenset[tuple[str, str]]) -> None:
    for session_id, response_id in counted:
        with contextlib.suppress(Exception):
            await cache.adelete(transcripts.usage_key(session_id, response_id))


async def _journal(batch, counted: frozenset[tuple[str, str]] = frozenset()) -> None:
    """The batch as journal ops, one per session. Usage this batch claimed is claimed
    again when the op is replayed: the claims are given back first."""
    await _unclaim(counted)
    for session_id, timed in batch.items():
        await journal.write(
            journal.recorded(
                session_id, [event for _, event in timed], source=SOURCE, count_usage=True
            )
        )


async def _one_by_one(batch) -> None:
    for session_id, timed in batch.items():
        for _, event in timed:
            try:
                await transcripts.apply_events(session_id, [event], source=SOURCE)
            except Exception as exc:
                log.warning("sideband_event_not_recorded", error=type(exc).__name__)
                count_error("sideband", "event_not_recorded")


def _usage_key(session_id: str, event: dict) -> str | None:
    response = event.get("response")
    if event.get("type") != events.RESPONSE_DONE or not isinstance(response, dict):
        return None
    response_id = transcripts.short(response.get("id"))
    return transcripts.usage_key(session_id, response_id) if response_id else None


async def _claim_usage(batch) -> frozenset[tuple[str, str]]:
    """The responses of the batch whose usage is counted now: each once, across the
    sideband and the browser's relay (the cache key transcripts uses), claimed in one
    round trip."""
    responses = [
        (session_id, transcripts.short(event["response"]["id"]), key)
        for session_id, timed in batch.items()
        for _, event in timed
        if (key := _usage_key(session_id, event))
        and isinstance(event["response"].get("usage"), dict)
    ]
    if not responses:
        return frozenset()
    keys = [key for _, _, key in responses]

    async def on_redis(client) -> list:
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(aredis.cache_key(key), 1, nx=True, ex=transcripts.USAGE_KEY_SECONDS)
            return await pipe.execute()

    def on_memory() -> list:
        return [cache.add(key, 1, timeout=transcripts.USAGE_KEY_SECONDS) for key in keys]

    claimed = await aredis.either(on_redis, on_memory)
    return frozenset(
        (session_id, response_id)
        for (session_id, response_id, _), won in zip(responses, claimed, strict=True)
        if won
    )


def _write_rows(batch, counted: frozenset[tuple[str, str]]) -> tuple[list[tuple[str, Item]], dict]:
    """The batch's items and usage, in one transaction: (the items that changed, for
    the live feed; cost added per model)."""
    changes: dict[tuple[str, str], list[tuple[datetime, dict]]] = {}
    usage: dict[str, list[dict]] = defaultdict(list)
    unbilled = set(counted)  # a response told twice in one batch counts once
    for session_id, timed in batch.items():
        for at, event in timed:
            response = event.get("response")
            if event.get("type") == events.RESPONSE_DONE and isinstance(response, dict):
                key = (session_id, transcripts.short(response.get("id")))
                if key in unbilled:
                    unbilled.discard(key)
                    usage[session_id].append(response)
                continue
            found = transcripts.changes_for(event)
            if found is not None:
                item_id, fields = found
                changes.setdefault((session_id, item_id), []).append(
                    (at, redaction.redact_fields(fields))
                )
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            changed = _write_items(cursor, changes)
            costs_by_model = _write_usage(cursor, usage)
    finally:
        connections.close_all()  # back to the pool: the next batch borrows one again
    return changed, costs_by_model


# Plain SQL: Django's bulk_update builds an expression per row and field, which costs
# more than the database's work for a batch of a thousand. The statements are put
# together from the models' own table and column names and placeholders only (S608).
_ITEMS = Item._meta.db_table
_COLUMNS = ("kind", "role", "status", "text", "name", "call_id", "arguments", "source")
_SESSIONS = VoiceSession._meta.db_table
_TOKENS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    *costs.Usage().counts(),
)
CHUNK = 1000  # rows per statement (PostgreSQL takes at most 65535 parameters)


def _chunks(rows: list) -> list[list]:
    return [rows[start : start + CHUNK] for start in range(0, len(rows), CHUNK)]


def _existing(keys) -> dict[tuple[str, str], Item]:
    """The items of keys that exist, by (session id, item id): one query (item ids are
    the upstream's, unique across a batch's sessions in practice; any other matches
    are dropped)."""
    if not keys:
        return {}
    wanted = set(keys)
    # Locked until the batch commits: a browser's relay writing one of them meanwhile
    # waits, and is not overwritten by the batch's update.
    rows = Item.objects.select_for_update().filter(
        session_id__in={session_id for session_id, _ in keys},
        item_id__in={item_id for _, item_id in keys},
    )
    return {
        (item.session_id, item.item_id): item
        for item in rows
        if (item.session_id, item.item_id) in wanted
    }


def _write_items(cursor, changes) -> list[tuple[str, Item]]:
    existing = _existing(list(changes))
    now = timezone.now()
    new: list[Item] = []
    updated: dict[tuple[str, str], Item] = {}
    for key, timed in changes.items():
        item = existing.get(key)
        if item is None:
            first_at, first = timed[0]
            item = Item(
                session_id=key[0],
                item_id=key[1],
                **{"role": Item.Role.ASSISTANT, **first, "source": SOURCE},
                created_at=first_at,
                updated_at=now,
            )
            for _, fields in timed[1:]:
                transcripts.merge(item, fields, SOURCE)
            new.append(item)
        elif any([transcripts.merge(item, fields, SOURCE) for _, fields in timed]):
            updated[key] = item
    inserted = []
    for rows in _chunks(new):
        inserted.extend(_insert(cursor, rows))
    if len(inserted) < len(new):
        # Another writer (a browser's relay) inserted some of them meanwhile: what the
        # batch says of those is merged into their rows.
        ours = {(item.session_id, item.item_id) for item in inserted}
        theirs = [(i.session_id, i.item_id) for i in new if (i.session_id, i.item_id) not in ours]
        for key, row in _existing(theirs).items():
            if any([transcripts.merge(row, fields, SOURCE) for _, fields in changes[key]]):
                updated[key] = row
    for rows in _chunks(list(updated.values())):
        _update(cursor, rows, now)
    return [(item.session_id, item) for item in [*inserted, *updated.values()]]


def _insert(cursor, items: list[Item]) -> list[Item]:
    """Inserts the items that no row has yet; returns those inserted (with their ids)."""
    columns = ("session_id", "item_id", *_COLUMNS, "created_at", "updated_at")
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    cursor.execute(
        f"INSERT INTO {_ITEMS} ({', '.join(columns)}) VALUES {', '.join([row] * len(items))} "  # noqa: S608
        "ON CONFLICT (session_id, item_id) DO NOTHING RETURNING id, session_id, item_id",
        [getattr(item, name) for item in items for name in columns],
    )
    by_key = {(item.session_id, item.item_id): item for item in items}
    inserted = []
    for pk, session_id, item_id in cursor.fetchall():
        item = by_key[(session_id, item_id)]
        item.pk = pk
        inserted.append(item)
    return inserted


def _update(cursor, items: list[Item], now: datetime) -> None:
    columns = ("id", *_COLUMNS, "updated_at")
    row = "(%s::bigint, " + ", ".join(["%s"] * len(_COLUMNS)) + ", %s::timestamptz)"
    for item in items:
        item.updated_at = now
    cursor.execute(
        f"UPDATE {_ITEMS} AS t SET "  # noqa: S608
        + ", ".join(f"{name} = v.{name}" for name in columns[1:])
        + f" FROM (VALUES {', '.join([row] * len(items))}) AS v({', '.join(columns)}) "
        "WHERE t.id = v.id",
        [getattr(item, name) for item in items for name in columns],
    )


def _write_usage(cursor, usage: dict[str, list[dict]]) -> dict:
    """The responses' usage and cost, added to their sessions in one statement."""
    if not usage:
        return {}
    models = dict(VoiceSession.objects.filter(pk__in=list(usage)).values_list("pk", "model"))
    costs_by_model: dict = defaultdict(lambda: 0)
    rows = []
    for session_id, responses in usage.items():
        model = models.get(session_id)
        if model is None:
            continue
        totals = dict.fromkeys(_TOKENS, 0)
        cost = 0
        for response in responses:
            counts, kinds = transcripts.usage_counts(
                response["usage"], transcripts.MAX_TOKENS_PER_RESPONSE
            )
            for name, value in {**counts, **kinds.counts()}.items():
                totals[name] += value
            cost += costs.cost(model, kinds)
        rows.append([session_id, *totals.values(), cost])
        costs_by_model[model] += cost
    if rows:
        row = "(%s, " + ", ".join(["%s::bigint"] * len(_TOKENS)) + ", %s::numeric)"
        cursor.execute(
            f"UPDATE {_SESSIONS} AS s SET "  # noqa: S608
            + ", ".join(f"{name} = s.{name} + v.{name}" for name in _TOKENS)
            + ", cost_usd = s.cost_usd + v.cost_usd"
            + f" FROM (VALUES {', '.join([row] * len(rows))}) "
            + f"AS v(id, {', '.join(_TOKENS)}, cost_usd) WHERE s.id = v.id",
            [value for values in rows for value in values],
        )
    return costs_by_model
