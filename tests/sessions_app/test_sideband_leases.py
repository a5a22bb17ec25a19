"""The sideband lease in one process: taken once, renewed only by its holder, let go
on a drain, and a call nobody holds is taken over by the sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from ops_app import drain
from ops_app.metrics import voice_errors_total
from sessions_app import actions, leases, sideband
from sessions_app.models import VoiceSession
from sessions_app.probe import open_call
from tests.support import eventually

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lease_store():
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


def holder_of(store: redis.Redis, session_id: str) -> str | None:
    value = store.get(leases.key(session_id))
    return value.decode() if value else None


async def test_a_lease_is_taken_once_and_only_its_holder_renews_or_releases_it(lease_store):
    taken = await leases.acquire("sess_lease_a")
    lease_store.set(leases.key("sess_lease_b"), "pod-x:1:abcd", px=5000)
    refused = await leases.acquire("sess_lease_b")
    renewed_other = await leases.renew("sess_lease_b")
    await leases.release("sess_lease_b")

    assert taken and holder_of(lease_store, "sess_lease_a") == leases.holder()
    assert not refused and not renewed_other
    assert holder_of(lease_store, "sess_lease_b") == "pod-x:1:abcd"
    assert leases.pod_of(leases.holder()) == settings.POD_NAME
    await leases.release("sess_lease_a")
    assert holder_of(lease_store, "sess_lease_a") is None
    lease_store.delete(leases.key("sess_lease_b"))


async def test_a_lapsed_lease_nobody_took_is_taken_back_on_renewal(lease_store):
    await leases.acquire("sess_lease_c")
    lease_store.delete(leases.key("sess_lease_c"))  # lapsed while its holder stalled

    assert await leases.renew("sess_lease_c")
    assert holder_of(lease_store, "sess_lease_c") == leases.holder()
    await leases.release("sess_lease_c")


async def test_a_holder_that_finds_its_lease_taken_stops_listening(
    http, simulator, settings, lease_store
):
    settings.SIDEBAND_HEARTBEAT_SECONDS = 0.2
    call = await open_call(http)
    session_id = call.session["session_id"]
    try:
        assert await eventually(lambda: _connected(session_id))
        lease_store.set(leases.key(session_id), "pod-x:1:abcd", px=5000)  # another took it
        stopped = await eventually(_nothing_held, timeout=5)
    finally:
        await call.close()
        lease_store.delete(leases.key(session_id))

    assert stopped
    # The new holder's "connected" stands: the loser does not say "detached".
    assert await _connected(session_id)


async def test_the_sweep_takes_over_a_live_call_nobody_holds_and_a_drain_hands_it_over(
    http, simulator, lease_store
):
    call = await open_call(http)
    session_id = call.session["session_id"]
    try:
        assert await eventually(lambda: _connected(session_id))
        await sideband.detach(session_id)  # its holder let go (or died: the lease lapsed)
        released = holder_of(lease_store, session_id)
        taken = await sideband.sweep(actions.SIDEBAND_HANDLERS)
        assert await eventually(lambda: _connected(session_id))
        again = await sideband.sweep(actions.SIDEBAND_HANDLERS)
        drain.start()
        try:
            await sideband.sweep(actions.SIDEBAND_HANDLERS)
            after_drain = holder_of(lease_store, session_id), sideband.held()
            sideband.attach(session_id, call.call_id, actions.SIDEBAND_HANDLERS)
            refused = sideband.held()
        finally:
            drain.stop()
    finally:
        await call.close()

    assert released is None
    assert taken == [session_id] and again == []
    assert after_drain == (None, [])
    assert refused == []  # a draining process takes no call
    assert not await _connected(session_id)


async def test_a_sideband_refused_just_after_the_answer_is_taken_over_by_the_sweep(
    http, simulator, settings
):
    """/sdp answers before the sideband attaches; when that first connection fails,
    its lease lapses and the next sweep holds the call."""
    settings.SIDEBAND_LEASE_SECONDS = 1.0
    refused_before = _sideband_failures()
    simulator.fault("error", count=1, operations=["sideband"])

    call = await open_call(http)
    session_id = call.session["session_id"]
    try:
        refused = await eventually(lambda: _failed_more_than(refused_before))
        connected_at_first = await _connected(session_id)
        taken = await eventually(lambda: _swept(session_id))
        connected = await eventually(lambda: _connected(session_id))
        held = sideband.held()
    finally:
        await call.close()

    assert refused and not connected_at_first
    assert taken == [session_id]
    assert connected and held == [session_id]


def _sideband_failures() -> float:
    return sum(
        sample.value
        for metric in voice_errors_total.collect()
        for sample in metric.samples
        if sample.name == "voice_errors_total" and sample.labels["component"] == "sideband"
    )


async def _failed_more_than(count: float) -> bool:
    return _sideband_failures() > count


async def _swept(session_id: str) -> list[str]:
    """A sweep's takeovers, once it takes this session (its lease lapsed)."""
    taken = await sideband.sweep(actions.SIDEBAND_HANDLERS)
    return taken if session_id in taken else []


def test_the_sweep_is_off_without_the_sideband(settings):
    settings.SIDEBAND_ENABLED = False
    settings.SIDEBAND_SWEEP_SECONDS = 1.0

    assert sideband.start_keeper() is False


async def _connected(session_id: str) -> bool:
    return (await VoiceSession.objects.aget(pk=session_id)).sideband_connected


async def _nothing_held() -> bool:
    return sideband.held() == []


async def test_a_sweep_leaves_a_call_nobody_held_yet_to_its_accepting_process_for_a_lease(
    make_session, simulator, lease_store
):
    session = await make_session(
        status="active", call_id="rtc_settling", connected_at=timezone.now()
    )

    settling = await sideband.sweep(actions.SIDEBAND_HANDLERS)
    await VoiceSession.objects.filter(pk=session.pk).aupdate(
        connected_at=timezone.now() - timedelta(seconds=settings.SIDEBAND_LEASE_SECONDS + 1)
    )
    taken = await sideband.sweep(actions.SIDEBAND_HANDLERS)
    await sideband.detach(session.pk)
    lease_store.delete(leases.key(session.pk))

    assert settling == [] and taken == [session.pk]
