"""ws /ws/sessions/<id>/: live events for the session's own token holder only, the
token in the Sec-WebSocket-Protocol header or the first message, never in the URL;
a few sockets per session and per client address; closed when the session ends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from sessions_app import actions, consumers, tokens

pytestmark = pytest.mark.django_db(transaction=True)


def _socket(
    session_id: str,
    token: str | None = None,
    *,
    query: str = "",
    address: str | None = None,
) -> WebsocketCommunicator:
    """A socket to the session's events; with a token, offered as a subprotocol."""
    from voiceplatform.asgi import application

    protocols = ["voiceplatform.v1"] + ([f"bearer.{token}"] if token is not None else [])
    socket = WebsocketCommunicator(
        application,
        f"/ws/sessions/{session_id}/{query}",
        headers=[(b"origin", b"http://localhost")],
        subprotocols=protocols,
    )
    if address:
        socket.scope["client"] = (address, 50000)
    return socket


async def _closed_with(socket: WebsocketCommunicator) -> int:
    message = await socket.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message.get("code", 1000)


@pytest.fixture
async def live_session(make_session):
    return await make_session(status="active")


async def test_it_streams_transcript_items_and_the_end(simulator, live_session):
    session = live_session
    socket = _socket(session.pk, tokens.issue(session.pk))
    connected, protocol = await socket.connect()
    state = await socket.receive_json_from(timeout=5)

    await actions.record_events(
        session,
        [
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "i1",
                "transcript": "hello there",
            }
        ],
    )
    item = await socket.receive_json_from(timeout=5)
    await actions.end_session(session, reason="client")
    ended = await socket.receive_json_from(timeout=5)
    code = await _closed_with(socket)
    await socket.disconnect()

    assert connected and protocol == "voiceplatform.v1"  # the token is not echoed
    assert state == {
        "type": "session.state",
        "status": "active",
        "sideband_connected": False,
        "expires_at": session.expires_at.isoformat(),
    }
    assert item["type"] == "transcript.item" and item["text"] == "hello there"
    assert ended == {"type": "session.ended", "status": "ended", "reason": "client"}
    assert code == 1000


async def test_it_takes_the_token_as_the_first_message(live_session):
    socket = _socket(live_session.pk)
    connected, _ = await socket.connect()

    await socket.send_json_to({"type": "auth", "token": tokens.issue(live_session.pk)})
    state = await socket.receive_json_from(timeout=5)
    await socket.disconnect()

    assert connected and state["type"] == "session.state" and state["status"] == "active"


@pytest.mark.parametrize("token", ["forged", "other"])
async def test_it_refuses_a_forged_or_foreign_token(live_session, token):
    if token == "other":
        token = tokens.issue("sess_other")
    socket = _socket(live_session.pk, token)

    connected, code = await socket.connect()
    await socket.disconnect()

    assert not connected and code in (4401, 4403)


@pytest.mark.parametrize(
    "first",
    [
        {"type": "auth", "token": "forged"},
        {"type": "auth"},
        {"type": "hello", "token": "x"},
        "not json",
        '{"type": "auth", "token": "\\ud800.x.y"}',  # a lone surrogate: no str of a header
    ],
)
async def test_it_closes_a_socket_whose_first_message_is_no_valid_token(live_session, first):
    socket = _socket(live_session.pk)
    await socket.connect()

    if isinstance(first, dict):
        await socket.send_json_to(first)
    else:
        await socket.send_to(text_data=first)
    code = await _closed_with(socket)
    await socket.disconnect()

    assert code == 4401


async def test_a_token_in_the_url_is_not_read(live_session, settings):
    settings.WS_AUTH_TIMEOUT_SECONDS = 0.2
    socket = _socket(live_session.pk, query=f"?token={tokens.issue(live_session.pk)}")
    connected, _ = await socket.connect()

    code = await _closed_with(socket)  # no session.state: it still waits for a token
    await socket.disconnect()

    assert connected and code == 4401


@pytest.mark.parametrize(
    "state",
    [
        {"status": "ended"},
        {"status": "expired"},
        {"status": "failed"},
        {"status": "active", "expires_at": timezone.now() - timedelta(seconds=1)},
    ],
)
async def test_it_refuses_a_session_that_is_not_live(state, make_session):
    session = await make_session(**state)
    by_header = _socket(session.pk, tokens.issue(session.pk))
    by_message = _socket(session.pk)

    header_connected, header_code = await by_header.connect()
    await by_message.connect()
    await by_message.send_json_to({"type": "auth", "token": tokens.issue(session.pk)})
    message_code = await _closed_with(by_message)
    await by_header.disconnect()
    await by_message.disconnect()

    assert not header_connected and header_code == 4410
    assert message_code == 4410


async def test_it_limits_the_sockets_of_one_session(live_session, settings):
    settings.WS_MAX_PER_SESSION = 3
    token = tokens.issue(live_session.pk)
    opened = [_socket(live_session.pk, token) for _ in range(3)]
    for socket in opened:
        assert (await socket.connect())[0]

    extra = _socket(live_session.pk, token)
    refused, code = await extra.connect()
    await extra.disconnect()
    await opened[0].disconnect()  # gives its place back
    again = _socket(live_session.pk, token)
    reopened, _ = await again.connect()
    for socket in [*opened[1:], again]:
        await socket.disconnect()

    assert not refused and code == 4429
    assert reopened


async def test_it_limits_the_sockets_of_one_client_address(settings, make_session):
    settings.WS_MAX_PER_IP = 2
    sessions = [await make_session(status="active") for _ in range(4)]
    mine = [
        _socket(session.pk, tokens.issue(session.pk), address="192.0.2.7")
        for session in sessions[:3]
    ]
    other = _socket(sessions[3].pk, tokens.issue(sessions[3].pk), address="192.0.2.8")

    results = [await socket.connect() for socket in mine]
    other_connected, _ = await other.connect()
    for socket in [*mine, other]:
        await socket.disconnect()

    assert [connected for connected, _ in results] == [True, True, False]
    assert results[2][1] == 4429
    assert other_connected


async def test_every_socket_of_a_session_closes_when_it_ends(simulator, live_session):
    token = tokens.issue(live_session.pk)
    sockets = [_socket(live_session.pk, token), _socket(live_session.pk)]
    await sockets[0].connect()
    await sockets[1].connect()
    await sockets[1].send_json_to({"type": "auth", "token": token})
    for socket in sockets:
        await socket.receive_json_from(timeout=5)  # session.state

    await actions.end_session(live_session, reason="client")
    last = [await socket.receive_json_from(timeout=5) for socket in sockets]
    codes = [await _closed_with(socket) for socket in sockets]
    for socket in sockets:
        await socket.disconnect()

    assert [event["type"] for event in last] == ["session.ended", "session.ended"]
    assert codes == [1000, 1000]


async def test_a_socket_outliving_its_session_closes_by_itself(monkeypatch, make_session):
    # As if the session.ended event were lost: the socket still goes after the expiry.
    monkeypatch.setattr(consumers, "AFTER_EXPIRY", timedelta(0))
    session = await make_session(
        status="active", expires_at=timezone.now() + timedelta(seconds=0.5)
    )
    socket = _socket(session.pk, tokens.issue(session.pk))
    await socket.connect()
    await socket.receive_json_from(timeout=5)  # session.state

    code = await _closed_with(socket)
    await socket.disconnect()

    assert code == 4410
