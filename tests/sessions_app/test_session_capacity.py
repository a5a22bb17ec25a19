"""Capacity: only live, unexpired sessions hold a place; one caller cannot hold them all."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions_app import actions
from sessions_app.models import VoiceSession

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _addresses_from_the_proxy(settings):
    # Each test speaks for several client addresses, as a proxy in front would.
    settings.USE_X_FORWARDED_FOR = True


async def _create(api, ip: str = "127.0.0.1", **headers):
    return await api.post(
        "/session", content_type="application/json", headers={"X-Forwarded-For": ip, **headers}
    )


async def test_a_session_past_its_lifetime_frees_its_place(api, simulator, settings):
    settings.SESSION_CAPACITY = 3

    statuses = [(await _create(api, f"10.0.0.{n}")).status_code for n in range(4)]
    await VoiceSession.objects.aupdate(expires_at=timezone.now() - timedelta(seconds=1))
    after_expiry = await _create(api, "10.0.0.9")

    assert statuses == [201, 201, 201, 503]
    assert after_expiry.status_code == 201


async def test_a_session_that_never_connects_is_released_after_the_grace(api, simulator, settings):
    settings.SESSION_CAPACITY = 2
    first, second = await _create(api, "10.0.0.1"), await _create(api, "10.0.0.2")
    full = await _create(api, "10.0.0.3")

    stale = timezone.now() - timedelta(seconds=settings.SESSION_CONNECT_GRACE_SECONDS + 1)
    await VoiceSession.objects.aupdate(created_at=stale)
    released = await _create(api, "10.0.0.4")
    late_offer = await api.post(
        "/sdp",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        content_type="application/sdp",
        headers={"Authorization": f"Bearer {first.json()['session_token']}"},
    )
    swept = await actions.expire_overdue_sessions()

    assert full.status_code == 503 and full.json()["error"]["code"] == "at_capacity"
    assert released.status_code == 201
    assert late_offer.status_code == 409
    assert swept == 1  # the second; the first ended when it came back too late
    abandoned = await VoiceSession.objects.aget(pk=second.json()["session_id"])
    assert (abandoned.status, abandoned.end_reason) == ("expired", "never_connected")


async def test_a_connected_session_keeps_its_place_past_the_grace(
    api, simulator, settings, make_session
):
    settings.SESSION_CAPACITY = 1
    long_ago = timezone.now() - timedelta(minutes=5)
    await make_session(status="active", created_at=long_ago, pod="local")
    settings.POD_NAME = "local"

    refused = await _create(api)
    swept = await actions.expire_overdue_sessions()

    assert refused.status_code == 503
    assert swept == 0


async def test_one_address_cannot_hold_more_than_its_share(api, simulator, settings):
    settings.SESSION_LIVE_PER_IP = 2

    same = [(await _create(api, "10.1.1.1")).status_code for _ in range(3)]
    other = await _create(api, "10.1.1.2")
    refused = await _create(api, "10.1.1.1")

    assert same == [201, 201, 429]
    assert refused.json()["error"]["code"] == "too_many_live_sessions"
    assert int(refused["Retry-After"]) >= 1
    assert other.status_code == 201


async def test_ending_a_session_gives_its_place_back(api, simulator, settings):
    settings.SESSION_LIVE_PER_IP = 1
    first = await _create(api, "10.2.2.2")
    refused = await _create(api, "10.2.2.2")

    ended = await api.post(
        f"/session/{first.json()['session_id']}/end",
        headers={"Authorization": f"Bearer {first.json()['session_token']}"},
    )
    again = await _create(api, "10.2.2.2")

    assert (refused.status_code, ended.status_code, again.status_code) == (429, 200, 201)


async def test_one_api_key_cannot_hold_more_than_its_share_from_any_address(
    api, simulator, settings, make_api_key
):
    settings.SESSION_LIVE_PER_CALLER = 2
    key = await make_api_key()
    auth = {"Authorization": f"Bearer {key.raw}"}

    statuses = [(await _create(api, f"10.3.3.{n}", **auth)).status_code for n in range(3)]
    anonymous = await _create(api, "10.3.3.9")

    assert statuses == [201, 201, 429]
    assert anonymous.status_code == 201
