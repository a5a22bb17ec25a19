"""Counted slots in the cache: a limit per key, places given back, and the count of a
process that died forgotten after a while rather than held for ever."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from ops_app import slots

LIFETIME = 100


@pytest.fixture
def clock(monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(slots.time, "time", lambda: now[0])
    return now


async def test_it_holds_a_key_to_its_limit_and_takes_back_what_is_given(clock):
    first = await slots.take("test:a", 2, LIFETIME)
    second = await slots.take("test:a", 2, LIFETIME)
    third = await slots.take("test:a", 2, LIFETIME)
    elsewhere = await slots.take("test:b", 2, LIFETIME)
    await slots.give_back(first)
    again = await slots.take("test:a", 2, LIFETIME)

    assert first and second and elsewhere and again
    assert third is None


async def test_a_slot_still_counts_in_the_next_bucket(clock):
    await slots.take("test:a", 1, LIFETIME)
    clock[0] += LIFETIME

    assert await slots.take("test:a", 1, LIFETIME) is None


async def test_slots_never_given_back_are_forgotten_two_lifetimes_later(clock):
    # A process that died holding both places never gives them back.
    await slots.take("test:a", 2, LIFETIME)
    await slots.take("test:a", 2, LIFETIME)
    clock[0] += 2 * LIFETIME

    assert await slots.take("test:a", 2, LIFETIME) is not None


async def test_giving_back_a_forgotten_slot_is_harmless(clock):
    slot = await slots.take("test:a", 1, LIFETIME)
    clock[0] += 2 * LIFETIME
    fresh = await slots.take("test:a", 1, LIFETIME)
    cache.delete(slot)  # as Redis does once the bucket's time is up

    await slots.give_back(slot)

    assert fresh is not None and await slots.take("test:a", 1, LIFETIME) is None
