"""The channel layer while Redis is down: sends reach this process's listeners, nothing
raises, and when Redis returns its groups are restored and messages go through it.
Each test stops only a Redis of its own."""

from __future__ import annotations

import asyncio

import pytest

from voiceplatform import outage
from voiceplatform.channel_layer import FallbackRedisChannelLayer

RETRY_SECONDS = 0.3


@pytest.fixture
async def layer(own_redis, settings):
    settings.REDIS_RETRY_SECONDS = RETRY_SECONDS
    layer = FallbackRedisChannelLayer(
        hosts=[{"address": own_redis.url, "socket_timeout": None, "socket_connect_timeout": 0.5}],
        prefix="fallback-test",
    )
    yield own_redis, layer
    await layer.close()


async def test_group_messages_reach_this_process_while_redis_is_down(layer):
    own_redis, layer = layer
    channel = await layer.new_channel()
    await layer.group_add("session.a", channel)
    own_redis.kill()

    await layer.group_send("session.a", {"type": "session.event", "n": 1})
    message = await asyncio.wait_for(layer.receive(channel), 5)

    assert message["n"] == 1
    assert outage.redis.down
    # Joining and leaving groups does not raise either.
    other = await layer.new_channel()
    await layer.group_add("session.b", other)
    await layer.group_discard("session.b", other)


async def test_a_listener_waiting_when_redis_dies_still_gets_messages(layer):
    own_redis, layer = layer
    channel = await layer.new_channel()
    await layer.group_add("toolexec.1", channel)
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.2)  # blocked on Redis

    own_redis.kill()
    await asyncio.sleep(0.2)
    await layer.group_send("toolexec.1", {"type": "tool.finished"})

    assert (await asyncio.wait_for(waiting, 5))["type"] == "tool.finished"


async def test_groups_are_restored_in_a_returning_redis(layer):
    own_redis, layer = layer
    channel = await layer.new_channel()
    await layer.group_add("session.c", channel)
    own_redis.kill()
    await layer.group_send("session.c", {"type": "session.event", "n": 1})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 1

    own_redis.start()  # empty: it has forgotten the group
    await asyncio.sleep(RETRY_SECONDS + 0.1)
    await layer.group_send("session.c", {"type": "session.event", "n": 2})
    assert not outage.redis.down

    # Sent through Redis, to the membership written back after the outage.
    client = own_redis.client()
    try:
        assert client.zcard("fallback-test:group:session.c") == 1
    finally:
        client.close()
    assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 2


async def test_many_groups_sent_at_once_reach_each_member_of_each_group_through_redis(layer):
    own_redis, layer = layer
    a1, a2, b = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("session.a", a1)
    await layer.group_add("session.a", a2)
    await layer.group_add("session.b", b)
    local, layer.local = layer.local, None  # a send not through Redis fails here
    try:
        await layer.group_send_many(
            [
                ("session.a", {"type": "session.events", "n": 1}),
                ("session.nobody", {"type": "session.events", "n": 2}),
                ("session.b", {"type": "session.events", "n": 3}),
            ]
        )
    finally:
        layer.local = local

    got = [await asyncio.wait_for(layer.redis.receive(c), 5) for c in (a1, a2, b)]
    assert [message["n"] for message in got] == [1, 1, 3]


async def test_many_groups_sent_at_once_reach_this_process_while_redis_is_down(layer):
    own_redis, layer = layer
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("session.a", a)
    await layer.group_add("session.b", b)
    own_redis.kill()

    await layer.group_send_many(
        [("session.a", {"type": "session.events", "n": 1}), ("session.b", {"n": 2})]
    )

    assert (await asyncio.wait_for(layer.receive(a), 5))["n"] == 1
    assert (await asyncio.wait_for(layer.receive(b), 5))["n"] == 2
    assert outage.redis.down


async def test_the_in_memory_side_sweeps_expired_entries_at_most_once_a_second(monkeypatch):
    from channels.layers import InMemoryChannelLayer

    from voiceplatform import channel_layer

    sweeps: list[float] = []
    monkeypatch.setattr(InMemoryChannelLayer, "_clean_expired", lambda self: sweeps.append(1))
    now = [1000.0]
    monkeypatch.setattr(channel_layer.time, "monotonic", lambda: now[0])
    local = channel_layer._LocalLayer(expiry=60)

    for _ in range(100):  # a burst of receives and sends
        local._clean_expired()
    assert len(sweeps) == 1

    now[0] += channel_layer._LocalLayer.SWEEP_EVERY_SECONDS
    local._clean_expired()
    assert len(sweeps) == 2


async def test_the_in_memory_side_still_drops_an_expired_message():
    from voiceplatform.channel_layer import _LocalLayer

    local = _LocalLayer(expiry=0.05)
    channel = await local.new_channel()
    await local.send(channel, {"type": "old"})
    await asyncio.sleep(0.1)  # past its expiry
    await local.send(channel, {"type": "new"})

    # The receive sweeps (the first sweep is never put off) and drops the old message.
    assert (await local.receive(channel))["type"] == "new"
