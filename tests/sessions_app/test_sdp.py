"""POST /sdp: a real WebRTC offer in, a real answer out, the call recorded."""

from __future__ import annotations

import time

import httpx
import pytest
from django.core import signing

from sessions_app import tokens
from sessions_app.models import VoiceSession
from sessions_app.probe import open_call

pytestmark = pytest.mark.django_db(transaction=True)


async def _session(http) -> dict:
    response = await http.post("/session", json={})
    assert response.status_code == 201
    return response.json()


def _offer_headers(session: dict, **extra) -> dict:
    return {
        "Content-Type": "application/sdp",
        "Authorization": f"Bearer {session['session_token']}",
        **extra,
    }


async def test_it_answers_a_real_offer_and_the_call_connects(http, simulator):
    call = await open_call(http)
    try:
        event = await call.wait_for(lambda e: e["type"] == "session.created")
        # Read while the call is up: closing it ends the session (the upstream hangs up).
        session = await VoiceSession.objects.aget(pk=call.session["session_id"])
    finally:
        await call.close()

    assert event["session"]["type"] == "realtime"
    assert session.call_id == call.call_id and call.call_id.startswith("rtc_")
    assert session.status == "active" and session.connected_at is not None


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
            "application/json",
            415,
            "unsupported_media_type",
        ),
        ("hello", "application/sdp", 400, "invalid_sdp"),
        ("v=0\r\n" + "a=x\r\n" * 20_000, "application/sdp", 413, "payload_too_large"),
        (
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
            "application/sdp",
            400,
            "offer_rejected",
        ),
    ],
)
async def test_it_rejects_a_bad_offer_and_keeps_the_session_usable(
    http, simulator, body, content_type, status, code
):
    session = await _session(http)

    response = await http.post(
        "/sdp", content=body, headers=_offer_headers(session, **{"Content-Type": content_type})
    )

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    stored = await VoiceSession.objects.aget(pk=session["session_id"])
    assert stored.status == "created" and stored.call_id is None
    call = await open_call(http, session=session)  # the session still connects
    await call.close()


async def test_it_refuses_an_offer_without_a_valid_token(http, simulator):
    session = await _session(http)
    offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"

    missing = await http.post("/sdp", content=offer, headers={"Content-Type": "application/sdp"})
    forged = await http.post(
        "/sdp",
        content=offer,
        headers=_offer_headers({"session_token": session["session_token"] + "x"}),
    )
    unknown = await http.post(
        "/sdp", content=offer, headers=_offer_headers({"session_token": tokens.issue("sess_nope")})
    )

    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_token"
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_token"
    assert unknown.status_code == 404


async def test_it_refuses_a_token_older_than_a_session_may_live(http, simulator, monkeypatch):
    session = await _session(http)
    real_time = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() - 901)
    old = tokens.issue(session["session_id"])
    monkeypatch.undo()

    response = await http.post(
        "/sdp", content="v=0\r\nm=audio 9 x\r\n", headers=_offer_headers({"session_token": old})
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


async def test_it_refuses_an_offer_for_an_expired_session_and_marks_it_expired(http, simulator):
    session = await _session(http)
    await VoiceSession.objects.filter(pk=session["session_id"]).aupdate(
        expires_at="2000-01-01T00:00:00Z"
    )

    response = await http.post(
        "/sdp", content="v=0\r\nm=audio 9 x\r\n", headers=_offer_headers(session)
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "session_ended"
    stored = await VoiceSession.objects.aget(pk=session["session_id"])
    assert stored.status == "expired" and stored.end_reason == "max_duration"


async def test_it_refuses_a_second_offer_for_the_same_session(http, simulator):
    call = await open_call(http)
    try:
        again = await http.post(
            "/sdp", content="v=0\r\nm=audio 9 x\r\n", headers=_offer_headers(call.session)
        )
    finally:
        await call.close()

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_connected"


async def test_it_refuses_a_session_header_that_disagrees_with_the_token(http, simulator):
    session = await _session(http)

    response = await http.post(
        "/sdp",
        content="v=0\r\nm=audio 9 x\r\n",
        headers=_offer_headers(session, **{"X-Voice-Session-Id": "sess_someone_else"}),
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "wrong_session"


async def test_an_upstream_failure_is_a_502_and_the_session_can_retry(http, simulator, settings):
    settings.OPENAI_MAX_RETRIES = 0
    session = await _session(http)
    simulator.fault("error", status=500, count=1, operations=["calls"])

    with pytest.raises(httpx.HTTPStatusError) as failed:
        await open_call(http, session=session)
    call = await open_call(http, session=session)
    await call.close()

    assert failed.value.response.status_code == 502
    assert failed.value.response.json()["error"]["code"] == "upstream_error"
    assert failed.value.response.headers["Retry-After"]


async def test_a_session_ended_while_connecting_stays_ended(http, simulator):
    import asyncio

    session = await _session(http)
    simulator.fault("slow", delay=1.0, count=1, operations=["calls"])
    peer_task = asyncio.create_task(open_call(http, session=session))
    await asyncio.sleep(0.3)

    ended = await http.post(
        session["urls"]["end"], headers={"Authorization": f"Bearer {session['session_token']}"}
    )
    with pytest.raises(httpx.HTTPStatusError) as late:
        await peer_task

    assert ended.json()["status"] == "ended"
    assert late.value.response.status_code == 409
    stored = await VoiceSession.objects.aget(pk=session["session_id"])
    assert stored.status == "ended" and stored.call_id is None


async def test_a_caller_that_goes_away_mid_offer_leaves_the_session_usable(http, simulator):
    """A disconnect cancels the view (daphne sends http.disconnect; Django cancels)."""
    import asyncio

    from sessions_app import actions
    from sessions_app.probe import offering_peer

    session = await _session(http)
    stored = await VoiceSession.objects.aget(pk=session["session_id"])
    simulator.fault("slow", delay=1.0, count=1, operations=["calls"])
    peer, _ = await offering_peer()
    connecting = asyncio.create_task(actions.connect_call(stored, peer.localDescription.sdp))
    await asyncio.sleep(0.3)
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    await peer.close()

    stored = await VoiceSession.objects.aget(pk=session["session_id"])
    call = await open_call(http, session=session)
    await call.close()

    assert stored.status == "created" and stored.call_id is None
