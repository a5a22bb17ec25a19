"""ws /ws/sessions/<id>/: live events for the session's own token holder only."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from sessions_app import actions, tokens

pytestmark = pytest.mark.django_db(transaction=True)


def _connect(session_id: str, token: str | None) -> WebsocketCommunicator:
    from voiceplatform.asgi import application

    query = f"?token={token}" if token is not None else ""
    return WebsocketCommunicator(
        application,
        f"/ws/sessions/{session_id}/{query}",
        headers=[(b"origin", b"http://localhost")],
    )


async def test_it_streams_transcript_items_and_the_end(simulator, make_session):
    session = await make_session(status="active")
    socket = _connect(session.pk, tokens.issue(session.pk))
    connected, _ = await socket.connect()
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
    await socket.disconnect()

    assert connected
    assert state == {
        "type": "session.state",
        "status": "active",
        "sideband_connected": False,
        "expires_at": session.expires_at.isoformat(),
    }
    assert item["type"] == "transcript.item" and item["text"] == "hello there"
    assert ended == {"type": "session.ended", "status": "ended", "reason": "client"}


@pytest.mark.parametrize("token", [None, "forged", "other"])
async def test_it_refuses_a_missing_forged_or_foreign_token(token, make_session):
    session = await make_session(status="active")
    if token == "other":
        token = tokens.issue("sess_other")
    socket = _connect(session.pk, token)

    connected, code = await socket.connect()

    assert not connected and code in (4401, 4403)
