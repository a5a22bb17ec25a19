"""The channel layer: channels_redis, and an in-memory layer while Redis is down.

Group memberships are kept on both sides. While Redis cannot be reached, sends go to
the in-memory layer, so live events still reach this process's sockets (not other
processes': tool waits re-read the database, pages re-read on reconnect); nothing here
raises because Redis is down. When Redis answers again, this process's memberships are
written back to it (a restarted Redis has forgotten them) and sends go through it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

import structlog
from channels.layers import BaseChannelLayer, InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from voiceplatform import outage

log = structlog.get_logger(__name__)

# A send or a group change that takes longer than this finds Redis down (the layer's
# connections have no read timeout: its blocking pop waits on them).
SEND_TIMEOUT_SECONDS = 1.0

# Delivers ARGV[i] to channel list KEYS[i] unless the list holds its capacity
# (ARGV[n + i]) already; ARGV[2n + 1] is now, ARGV[2n + 2] the lists' expiry. Returns how
# many lists were full. The same effect as channels_redis's group send, per group.
_DELIVER_LUA = """
local n = #KEYS
local full = 0
for i = 1, n do
  if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
    redis.call('ZADD', KEYS[i], ARGV[2 * n + 1], ARGV[i])
    redis.call('EXPIRE', KEYS[i], ARGV[2 * n + 2])
  else
    full = full + 1
  end
end
return full
"""


class _LocalLayer(InMemoryChannelLayer):
    """Channels' in-memory layer, sweeping expired messages and memberships at most once
    a second. Its own sweep runs on every receive and group send and walks every channel
    and group: with a thousand sockets, each waiting on this layer too, that is a
    thousand walks for one burst of events. Expiry is minutes (messages) to a day
    (memberships), so a second's delay changes nothing."""

    SWEEP_EVERY_SECONDS = 1.0
    _swept_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < self.SWEEP_EVERY_SECONDS:
            return
        self._swept_at = now
        super()._clean_expired()


class _RedisLayer(RedisChannelLayer):
    async def group_send_many(self, sends: list[tuple[str, dict]]) -> None:
        """group_send for each (group, message), in two pipelined round trips per Redis
        host for all of them (one reads the groups' members, one delivers), where
        channels_redis makes two to four per group. A pass of the transcript writer
        publishes to a thousand sessions at once."""
        now = time.time()
        by_host: dict[int, list[tuple[str, dict]]] = defaultdict(list)
        for group, message in sends:
            assert self.require_valid_group_name(group), "Group name not valid"
            by_host[self.consistent_hash(group)].append((group, message))
        deliveries: dict[int, list[tuple[list, list]]] = defaultdict(list)
        for index, host_sends in by_host.items():
            pipe = self.connection(index).pipeline(transaction=False)
            for group, _ in host_sends:
                key = self._group_key(group)
                pipe.zremrangebyscore(key, min=0, max=int(now) - self.group_expiry)
                pipe.zrange(key, 0, -1)
            members = (await pipe.execute())[1::2]
            for (_, message), channels in zip(host_sends, members, strict=True):
                if not channels:
                    continue
                names = [channel.decode() for channel in channels]
                keys_by_host, messages, capacities = self._map_channel_keys_to_connection(
                    names, message
                )
                for channel_host, keys in keys_by_host.items():
                    args = [messages[key] for key in keys] + [capacities[key] for key in keys]
                    deliveries[channel_host].append((keys, args))
        full = 0
        for index, host_deliveries in deliveries.items():
            pipe = self.connection(index).pipeline(transaction=False)
            for keys, _ in host_deliveries:  # messages past their expiry make room
                for key in keys:
                    pipe.zremrangebyscore(key, min=0, max=int(now) - int(self.expiry))
            for keys, args in host_deliveries:
                pipe.eval(_DELIVER_LUA, len(keys), *keys, *args, now, self.expiry)
            replies = await pipe.execute()
            full += sum(replies[-len(host_deliveries) :])
        if full:
            log.info("channel_layer_channels_full", channels=full)


class FallbackRedisChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(self, **config) -> None:
        self.redis = _RedisLayer(**config)
        self.local = _LocalLayer(
            expiry=self.redis.expiry,
            group_expiry=self.redis.group_expiry,
            capacity=self.redis.capacity,
        )
        super().__init__(expiry=self.redis.expiry, capacity=self.redis.capacity)
        self._members: dict[str, set[str]] = defaultdict(set)
        self._outage_seen = outage.redis.count

    # --- Redis, tried only while the outage circuit lets us --------------------
    async def _on_redis(
        self, name: str | None, *args, timeout: float | None = SEND_TIMEOUT_SECONDS
    ):
        """(True, result), or (False, None) when Redis is down or just went down.
        After an outage, this process's memberships are written back first; name None
        does only that."""
        if not outage.redis.should_try():
            return False, None
        reached, result = False, None
        try:
            if self._outage_seen != outage.redis.count:
                reached = await self._rejoin()
            if name is not None:
                result = await asyncio.wait_for(getattr(self.redis, name)(*args), timeout)
                reached = True
        except Exception as exc:
            if not outage.is_unreachable(exc):
                raise
            outage.redis.failed(exc)
            return False, None
        if reached:
            outage.redis.succeeded()
        return True, result

    async def _rejoin(self) -> bool:
        """Tells a Redis that may have restarted (and forgotten its groups) who listens
        here; whether that reached Redis."""
        seen = outage.redis.count
        members = [
            (group, channel) for group, channels in self._members.items() for channel in channels
        ]
        for group, channel in members:
            await asyncio.wait_for(self.redis.group_add(group, channel), SEND_TIMEOUT_SECONDS)
        self._outage_seen = seen
        if members:
            log.info("channel_layer_groups_restored", memberships=len(members))
        return bool(members)

    # --- the channel layer API -------------------------------------------------
    async def new_channel(self, prefix: str = "specific") -> str:
        # Names only; Redis is not asked. The local layer receives on any valid name.
        return await self.redis.new_channel(prefix)

    async def send(self, channel: str, message: dict) -> None:
        sent, _ = await self._on_redis("send", channel, message)
        if not sent:
            await self.local.send(channel, message)

    async def group_send(self, group: str, message: dict) -> None:
        sent, _ = await self._on_redis("group_send", group, message)
        if not sent:
            await self.local.group_send(group, message)

    async def group_send_many(self, sends: list[tuple[str, dict]]) -> None:
        """group_send for each (group, message), all in one go (two round trips)."""
        if not sends:
            return
        sent, _ = await self._on_redis("group_send_many", sends, timeout=2 * SEND_TIMEOUT_SECONDS)
        if not sent:
            for group, message in sends:
                await self.local.group_send(group, message)

    async def group_add(self, group: str, channel: str) -> None:
        self._members[group].add(channel)
        await self.local.group_add(group, channel)
        await self._on_redis("group_add", group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        members = self._members.get(group)
        if members is not None:
            members.discard(channel)
            if not members:
                del self._members[group]
        await self.local.group_discard(group, channel)
        await self._on_redis("group_discard", group, channel)

    async def receive(self, channel: str) -> dict:
        """The first message for channel from Redis or (while Redis is down) from
        this process."""
        local = asyncio.ensure_future(self.local.receive(channel))
        remote: asyncio.Future | None = None
        try:
            while True:
                if remote is None and (await self._on_redis(None))[0]:
                    remote = asyncio.ensure_future(self.redis.receive(channel))
                waiting = {local} if remote is None else {local, remote}
                # While Redis is down, look again when it is time to try it.
                timeout = None if remote is not None else outage.redis.retry_in()
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if remote is not None and remote in done:
                    finished, remote = remote, None
                    try:
                        message = finished.result()
                    except Exception as exc:
                        if not outage.is_unreachable(exc):
                            raise
                        outage.redis.failed(exc)
                    else:
                        outage.redis.succeeded()
                        if local in done and local.exception() is None:
                            # Both came at once: the next receive gets this one.
                            await self.local.send(channel, local.result())
                        await self._on_redis(None)
                        return message
                if local in done:
                    return local.result()
        finally:
            # channels_redis gives up a cancelled receive cleanly (consumers cancel
            # theirs on every disconnect).
            for task in (local, remote):
                if task is not None and not task.done():
                    task.cancel()

    async def flush(self) -> None:
        self._members.clear()
        await self.local.flush()
        await self._on_redis("flush", timeout=None)

    async def close(self) -> None:
        await self.local.close()
        with contextlib.suppress(Exception):
            await self.redis.close_pools()
