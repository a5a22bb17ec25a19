"""Who holds a call's sideband: a lease per session in Redis, `sideband:lease:<id>` =
the holder's id (`<pod>:<pid>:<random>`), taken with SET NX and a TTL of a few
seconds, renewed by its holder about every second. A process that dies stops renewing,
its leases expire, and another process takes the calls over.

Without Redis (the embedded default: one process) the leases live in this process.
With Redis configured but unreachable, nothing can be taken over and a holder keeps
what it holds: a Redis outage must not drop live calls."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import weakref

import redis.asyncio as redis
import structlog
from django.conf import settings

log = structlog.get_logger(__name__)

_holder: tuple[int, str] | None = None  # (pid, holder id)

# For each key: renew it if it is ours, take it back if it expired meanwhile; 0 for a
# key another holder has.
_RENEW = """
local renewed = {}
for i, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held == ARGV[1] then
    renewed[i] = redis.call('PEXPIRE', key, ARGV[2])
  elseif not held then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    renewed[i] = 1
  else
    renewed[i] = 0
  end
end
return renewed
"""
# Renewals asked for within this long go to Redis together, as one script call: a
# process holding a thousand calls renews them in a few calls a second, not a thousand.
RENEW_BATCH_SECONDS = 0.05
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.Redis] = (
    weakref.WeakKeyDictionary()
)
# session id -> (holder, expiry on the monotonic clock): the store when there is no Redis.
_local: dict[str, tuple[str, float]] = {}


class Unavailable(Exception):
    """Redis is configured but does not answer: nobody can take or lose a lease now."""


def holder() -> str:
    """This process's id as a lease holder (a forked child gets its own)."""
    global _holder
    if _holder is None or _holder[0] != os.getpid():
        _holder = (os.getpid(), f"{settings.POD_NAME}:{os.getpid()}:{secrets.token_hex(4)}")
    return _holder[1]


def pod_of(holder_id: str) -> str:
    return holder_id.rsplit(":", 2)[0]


def key(session_id: str) -> str:
    return f"sideband:lease:{session_id}"


def _ttl_ms() -> int:
    return int(settings.SIDEBAND_LEASE_SECONDS * 1000)


def _client() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    existing = _clients.get(loop)
    if existing is None:
        existing = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        _clients[loop] = existing
    return existing


async def _call(operation):
    try:
        return await operation
    except (redis.RedisError, OSError) as exc:
        raise Unavailable(type(exc).__name__) from None


def _local_holder(session_id: str) -> str | None:
    found = _local.get(session_id)
    if found is None or found[1] < time.monotonic():
        return None
    return found[0]


async def acquire(session_id: str) -> bool:
    """Takes the lease if nobody holds it (or we already do)."""
    client = _client()
    if client is None:
        if _local_holder(session_id) not in (None, holder()):
            return False
        _local[session_id] = (holder(), time.monotonic() + settings.SIDEBAND_LEASE_SECONDS)
        return True
    taken = await _call(client.set(key(session_id), holder(), nx=True, px=_ttl_ms()))
    return bool(taken) or await renew(session_id)


async def renew(session_id: str) -> bool:
    """Extends our lease (or takes it back if it lapsed and nobody took it); False
    when another process holds it."""
    client = _client()
    if client is None:
        return await acquire(session_id)
    loop = asyncio.get_running_loop()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = {}
        loop.call_later(RENEW_BATCH_SECONDS, lambda: loop.create_task(_renew_batch(client, batch)))
    if session_id not in batch:
        answer = batch[session_id] = loop.create_future()
        # Read even when its caller is gone (cancelled): no "never retrieved" warning.
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(batch[session_id])


# The renewals waiting for the next batch, per event loop: session id -> its answer.
_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[bool]]] = (
    weakref.WeakKeyDictionary()
)


async def _renew_batch(client: redis.Redis, batch: dict[str, asyncio.Future[bool]]) -> None:
    _batches.pop(asyncio.get_running_loop(), None)  # later renewals start the next one
    session_ids = list(batch)
    try:
        renewed = await _call(
            client.eval(_RENEW, len(session_ids), *map(key, session_ids), holder(), _ttl_ms())
        )
    except Exception as exc:
        for answer in batch.values():
            answer.set_exception(exc)
        return
    for session_id, value in zip(session_ids, renewed, strict=True):
        batch[session_id].set_result(bool(value))


async def release(session_id: str) -> None:
    """Gives the lease up, if it is ours, so another process may take the call at once."""
    client = _client()
    if client is None:
        if _local_holder(session_id) == holder():
            _local.pop(session_id, None)
        return
    await _call(client.eval(_RELEASE, 1, key(session_id), holder()))


async def holders(session_ids: list[str]) -> dict[str, str | None]:
    """Who holds each session's lease (None: nobody)."""
    if not session_ids:
        return {}
    client = _client()
    if client is None:
        return {session_id: _local_holder(session_id) for session_id in session_ids}
    values = await _call(client.mget([key(session_id) for session_id in session_ids]))
    return {
        session_id: value.decode() if value is not None else None
        for session_id, value in zip(session_ids, values, strict=True)
    }
