"""Level 3, the database away: history is buffered here and written when it returns.

What the request paths write about a session (its creation, its call connected, its
transcript events, its end) is an op, a JSON record. `write(op)` applies it at once
when PostgreSQL answers, and otherwise appends it to the journal: a Redis list, or a
spool file under VAR_DIR when Redis is away too. `replay()` applies the journal in
order and removes each op only once it is committed; every op is an idempotent upsert
(keyed by the session id, or by the session and item id), so an op applied twice, or
the same events relayed twice, changes nothing. While anything is still pending, new
ops queue behind it, so the order holds.

What the request paths read while the database is away (the session a token names)
comes from a snapshot of each session kept in the cache (and in this process) from
its creation on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import fcntl
import json
import os
from enum import StrEnum
from pathlib import Path

import structlog
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import serializers
from django.core.cache import cache
from django.core.exceptions import ObjectDoesNotExist
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.utils.dateparse import parse_datetime
from health_check import HealthCheck
from health_check.exceptions import ServiceWarning

from ops_app import health
from ops_app.metrics import count_error
from sessions_app import transcripts
from sessions_app.models import VoiceSession
from voiceplatform import aredis, dbpool

log = structlog.get_logger(__name__)

# What a database that cannot be reached raises (not a constraint or a bad query).
UNREACHABLE = (OperationalError, InterfaceError)
LOCK_SECONDS = 60
LOCAL_SNAPSHOTS = 10_000


class Op(StrEnum):
    CREATE = "create"
    CONNECTED = "connected"
    EVENTS = "events"
    END = "end"


# --- ops ------------------------------------------------------------------------------
def created(session: VoiceSession) -> dict:
    return {"op": Op.CREATE, "session_id": session.pk, "row": _serialized(session)}


def connected(session: VoiceSession) -> dict:
    return {
        "op": Op.CONNECTED,
        "session_id": session.pk,
        "call_id": session.call_id,
        "connected_at": session.connected_at.isoformat(),
    }


def recorded(session_id: str, events: list[dict], *, source: str, count_usage: bool) -> dict:
    return {
        "op": Op.EVENTS,
        "session_id": session_id,
        "events": events,
        "source": source,
        "count_usage": count_usage,
    }


def ended(session: VoiceSession) -> dict:
    return {
        "op": Op.END,
        "session_id": session.pk,
        "status": session.status,
        "reason": session.end_reason,
        "ended_at": session.ended_at.isoformat(),
        "duration_seconds": session.duration_seconds,
    }


async def _apply(op: dict):
    kind, session_id = op["op"], op["session_id"]
    if kind == Op.CREATE:
        # One statement: inserted unless it already is (a replay of an applied op).
        await VoiceSession.objects.abulk_create([_deserialized(op["row"])], ignore_conflicts=True)
        return None
    if kind == Op.CONNECTED:
        return await VoiceSession.objects.filter(
            pk=session_id,
            status__in=VoiceSession.LIVE_STATUSES,
            call_id__isnull=True,
        ).aupdate(
            call_id=op["call_id"],
            status=VoiceSession.Status.ACTIVE,
            connected_at=parse_datetime(op["connected_at"]),
        )
    if kind == Op.EVENTS:
        return await transcripts.apply_events(
            session_id, op["events"], source=op["source"], count_usage=op["count_usage"]
        )
    if kind == Op.END:
        return await VoiceSession.objects.filter(
            pk=session_id, status__in=VoiceSession.LIVE_STATUSES
        ).aupdate(
            status=op["status"],
            ended_at=parse_datetime(op["ended_at"]),
            end_reason=op["reason"],
            duration_seconds=op["duration_seconds"],
        )
    raise ValueError(f"unknown journal op {kind!r}")


# --- the one place that decides: now, or later ----------------------------------------
async def away() -> bool:
    """The database is unreachable, as far as this process knows (the level-3 check)."""
    return not (await health.check("database", wait=False)).ok


async def deferring() -> bool:
    """Writes go to the journal: the database is away, or older ops still wait."""
    return await away() or await pending()


def went_away(exc: Exception) -> None:
    """The database failed under us: level 3 from now on. Unless every pooled
    connection was merely in use: that is a busy process, refused with 503."""
    if dbpool.exhausted(exc):
        raise dbpool.busy() from exc
    health.report_failure("database", f"{type(exc).__name__}: {exc}")
    count_error("database", type(exc).__name__)
    log.warning("database_unreachable", error=type(exc).__name__)


async def write(op: dict) -> tuple[bool, object]:
    """Applies op now when the database answers and nothing waits before it; otherwise
    journals it. Returns (applied now, what applying returned)."""
    if not await deferring():
        try:
            return True, await _apply(op)
        except UNREACHABLE as exc:
            went_away(exc)
    await append(op)
    if not await away():
        replay_soon()  # it queued behind older ops: write them all now
    return False, None


async def lookup(session_id: str) -> VoiceSession | None:
    """The session: while the database is away or the journal holds ops (its row may
    be missing or behind), its snapshot; otherwise its row."""
    if await deferring():
        remembered = await recall(session_id)
        if remembered is not None:
            return remembered
    try:
        return await VoiceSession.objects.filter(pk=session_id).afirst()
    except UNREACHABLE as exc:
        went_away(exc)
        return await recall(session_id)


# --- snapshots of live sessions -------------------------------------------------------
_snapshots: dict[str, str] = {}


def _serialized(session: VoiceSession) -> str:
    """What serializers.serialize("json", [session]) writes, the same text: built as
    Python by Django's serializer, then encoded in one json.dumps (C), not streamed
    through json.dump's pure-Python encoder (most of the cost, on every /session)."""
    (row,) = serializers.serialize("python", [session])
    return f"[{json.dumps(row, cls=DjangoJSONEncoder, ensure_ascii=False)}]"


def _deserialized(data: str) -> VoiceSession:
    return next(serializers.deserialize("json", data)).object


def _snapshot_key(session_id: str) -> str:
    return f"journal:session:{session_id}"


async def remember(session: VoiceSession, row: str | None = None) -> None:
    """Keeps what the request paths need to serve this session without the database
    (row: the session already serialized, as a create op holds it)."""
    data = row or _serialized(session)
    if len(_snapshots) >= LOCAL_SNAPSHOTS:
        _snapshots.pop(next(iter(_snapshots)))
    _snapshots[session.pk] = data
    if aredis.url() is None:
        return  # the cache would be this process's memory: _snapshots is that

    async def on_redis(redis) -> None:
        # As the cache stores it, so recall's cache.get reads it back.
        key = aredis.cache_key(_snapshot_key(session.pk))
        await redis.set(key, cache.client.encode(data), ex=settings.SESSION_MAX_SECONDS + 3600)

    # Redis away too: this process's copy serves.
    await aredis.either(on_redis, lambda: None)


async def recall(session_id: str) -> VoiceSession | None:
    data = None
    with contextlib.suppress(Exception):
        data = await sync_to_async(cache.get, thread_sensitive=False)(_snapshot_key(session_id))
    data = data or _snapshots.get(session_id)
    return _deserialized(data) if data else None


# --- where the journal lives ----------------------------------------------------------
def _key(suffix: str = "ops") -> str:
    # One journal per database: processes on another database must not replay it.
    name = connections["default"].settings_dict["NAME"]
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:journal:{name}:{suffix}"


def _redis():
    if not settings.REDIS_URL:
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def _spool(name: str = "spool") -> Path:
    return Path(settings.VAR_DIR) / "journal" / f"{name}.jsonl"


def _spool_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _spooled() -> bool:
    return any(path.exists() and path.stat().st_size for path in (_spool(), _spool("replaying")))


def _append_to_spool(line: str, name: str = "spool") -> None:
    path = _spool(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with path.open("a") as spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            # A replayer may have moved this file aside while we waited: write to the
            # fresh one, or the line would land behind what it already read.
            if path.exists() and os.stat(path).st_ino == os.fstat(spool.fileno()).st_ino:
                spool.write(line + "\n")
                spool.flush()
                return


def _append(op: dict) -> None:
    line = json.dumps(op, cls=DjangoJSONEncoder)
    client = _redis()
    # Once something is spooled, later ops follow it there: order holds.
    if client is not None and not _spooled():
        try:
            client.rpush(_key(), line)
            return
        except Exception as exc:
            log.warning("journal_redis_unreachable", error=type(exc).__name__)
    _append_to_spool(line)


async def append(op: dict) -> None:
    await sync_to_async(_append, thread_sensitive=False)(op)
    log.info("journaled", op=op["op"], session_id=op["session_id"])


def _pending() -> int:
    count = len(_spool_lines(_spool())) + len(_spool_lines(_spool("replaying")))
    client = _redis()
    if client is not None:
        with contextlib.suppress(Exception):
            count += client.llen(_key())
    return count


async def pending() -> int:
    """How many ops wait to be written. The usual answer (no spool file, the Redis list
    read on the event loop) costs no thread hop."""
    if _spooled():
        return await sync_to_async(_pending, thread_sensitive=False)()
    if aredis.url() is None:
        return 0

    async def on_redis(redis) -> int:
        return await redis.llen(_key())

    return await aredis.either(on_redis, lambda: 0)


# --- replay ---------------------------------------------------------------------------
async def replay() -> int:
    """Writes the journal to the database, oldest op first; returns how many ops were
    written. Stops (keeping the rest) when the database goes away again. One replayer
    at a time across processes."""
    client = _redis()
    locked = False
    if client is not None:
        try:
            locked = await sync_to_async(client.set, thread_sensitive=False)(
                _key("replaying"), "1", nx=True, ex=LOCK_SECONDS
            )
            if not locked:
                return 0
        except Exception:
            client = None  # Redis away: the spool alone, under its file lock
    written = 0
    try:
        async with ThreadSensitiveContext():
            try:
                if client is not None:
                    written += await _replay_redis(client)
                written += await _replay_spool()
            except UNREACHABLE as exc:
                went_away(exc)
            else:
                if written:  # the database took every op: it is back, whatever the
                    # last probe (still waiting on the pool's reconnect) said
                    health.report_ok("database", "the journal was written to it")
            finally:
                await sync_to_async(connections.close_all)()
    finally:
        if locked:
            with contextlib.suppress(Exception):
                await sync_to_async(client.delete, thread_sensitive=False)(_key("replaying"))
    if written:
        log.info("journal_replayed", ops=written)
    return written


async def _apply_or_set_aside(line: str) -> None:
    """An op the database refuses for good (not for being away) is set aside, logged,
    so it cannot hold back those behind it."""
    try:
        await _apply(json.loads(line))
    except UNREACHABLE:
        raise
    except (DatabaseError, ObjectDoesNotExist, ValueError, KeyError, TypeError) as exc:
        log.error("journal_op_refused", error=f"{type(exc).__name__}: {exc}"[:300])
        await sync_to_async(_append_to_spool, thread_sensitive=False)(line, "refused")


async def _replay_redis(client) -> int:
    written = 0
    while True:
        line = await sync_to_async(client.lindex, thread_sensitive=False)(_key(), 0)
        if line is None:
            return written
        await _apply_or_set_aside(line.decode() if isinstance(line, bytes) else line)
        # This op (the first equal to it: an identical op is applied by now too), not
        # whatever is first now; and the lock is held while there is work.
        await sync_to_async(client.lrem, thread_sensitive=False)(_key(), 1, line)
        await sync_to_async(client.expire, thread_sensitive=False)(_key("replaying"), LOCK_SECONDS)
        written += 1


async def _replay_spool() -> int:
    """The spool is moved aside (new ops start a fresh one behind it), then written line
    by line; what is left when the database goes away again stays for next time."""
    replaying = _spool("replaying")
    if not replaying.exists() and _spool().exists():
        with _spool().open("a") as spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            _spool().rename(replaying)
    lines = _spool_lines(replaying)
    for done, line in enumerate(lines):
        try:
            await _apply_or_set_aside(line)
        except UNREACHABLE:
            rest = replaying.with_suffix(".tmp")
            rest.write_text("".join(f"{kept}\n" for kept in lines[done:]))
            rest.replace(replaying)
            raise
    replaying.unlink(missing_ok=True)
    return len(lines)


_replaying: asyncio.Task | None = None


def replay_soon() -> None:
    """Starts a replay in the background of this event loop, unless one runs already
    (for health.on_recovery: called in the loop, must not block)."""
    global _replaying
    if _replaying is not None and not _replaying.done():
        return
    with contextlib.suppress(RuntimeError):  # no running loop: the sweep replays
        # A context of its own: it outlives the request that started it, and with it
        # that request's thread (voiceplatform.handler).
        _replaying = asyncio.get_running_loop().create_task(
            _replay_if_pending(), context=contextvars.Context()
        )


async def _replay_if_pending() -> None:
    try:
        if await pending():
            await replay()
    except Exception as exc:  # a background task: say why, the next trigger retries
        log.warning("journal_replay_failed", error=type(exc).__name__)


@dataclasses.dataclass
class Backlog(HealthCheck):
    """/health's "journal": history written while the database was away that has not
    reached it yet (registered by sessions_app.apps)."""

    async def run(self) -> None:
        waiting = await pending()
        if waiting:
            raise ServiceWarning(f"{waiting} write(s) wait for the database")
