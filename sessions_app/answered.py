"""Calls whose SDP answer went back before the call was recorded on its session.

/sdp answers as soon as the upstream does and records the call just after
(actions.connect_call). Between the two, the call is known only here: a mark per call
(session id, call id, when answered) in a Redis sorted set, set before the answer goes
back and cleared once the call is recorded (or hung up). A mark still there a while
later was left by a process that died or gave up in between: the sideband sweep finds
it (`waiting`) and records the call, or hangs it up.

Without Redis (the embedded default: one process), or while it is away, the marks live
in this process."""

from __future__ import annotations

import time

from django.db import connections

from voiceplatform import aredis

# "<session id> <call id>" -> when answered (seconds since the epoch), without Redis.
_local: dict[str, float] = {}


def _key() -> str:
    # One set per database, as the journal's: a process on another database must not
    # record (or hang up) these calls.
    return aredis.cache_key(f"calls:answered:{connections['default'].settings_dict['NAME']}")


def _member(session_id: str, call_id: str) -> str:
    return f"{session_id} {call_id}"


async def mark(session_id: str, call_id: str, answered_at: float) -> None:
    """Notes that call_id was answered for session_id at answered_at (epoch seconds)."""
    member = _member(session_id, call_id)

    async def on_redis(redis) -> None:
        await redis.zadd(_key(), {member: answered_at})

    def on_memory() -> None:
        _local[member] = answered_at

    await aredis.either(on_redis, on_memory)


async def clear(session_id: str, call_id: str) -> None:
    """The call is recorded on its session (or hung up): nothing is left to do."""
    member = _member(session_id, call_id)
    _local.pop(member, None)

    async def on_redis(redis) -> None:
        await redis.zrem(_key(), member)

    await aredis.either(on_redis, lambda: None)


async def waiting(older_than: float) -> list[tuple[str, str, float]]:
    """(session id, call id, when answered) of each mark set more than older_than
    seconds ago, oldest first."""
    before = time.time() - older_than

    async def on_redis(redis) -> list:
        return await redis.zrangebyscore(_key(), "-inf", before, withscores=True)

    found = {
        member.decode() if isinstance(member, bytes) else member: score
        for member, score in await aredis.either(on_redis, list)
    }
    found.update((member, at) for member, at in _local.items() if at <= before)
    marks = []
    for member, at in found.items():
        session_id, _, call_id = member.partition(" ")
        marks.append((session_id, call_id, at))
    return sorted(marks, key=lambda found_mark: found_mark[2])
