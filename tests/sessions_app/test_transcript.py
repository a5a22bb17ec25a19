"""Transcript intake: the sideband records the conversation; the browser relay fills in
what it could not see; neither duplicates anything."""

from __future__ import annotations

import pytest

from sessions_app.models import ConversationItem, VoiceSession
from sessions_app.probe import open_call
from tests.factories import bearer
from tests.support import eventually

pytestmark = pytest.mark.django_db(transaction=True)


async def _items(session_id: str) -> list[tuple[str, str, str]]:
    return [
        (item.role, item.status, item.text)
        async for item in ConversationItem.objects.filter(session_id=session_id)
    ]


async def test_the_sideband_records_the_conversation_in_order(http, simulator):
    call = await open_call(http)
    session_id = call.session["session_id"]
    try:
        # The simulated user speaks first (voice activity on the microphone track) ...
        await call.wait_for(lambda e: e["type"] == "response.done")
        call.say("What is the weather like?")  # ... then types.
        await call.wait_for(
            lambda e: (
                e["type"] == "response.done"
                and len([x for x in call.events if x["type"] == "response.done"]) == 2
            )
        )

        async def four_final_items():
            items = await _items(session_id)
            return len(items) == 4 and all(status == "completed" for _, status, _ in items)

        assert await eventually(four_final_items)
        session = await VoiceSession.objects.aget(pk=session_id)
        # The browser relays the same events: nothing changes, nothing is counted twice.
        relayed = await http.post(
            f"/session/{session_id}/events",
            json={"events": call.events},
            headers={"Authorization": f"Bearer {call.session['session_token']}"},
        )
    finally:
        await call.close()

    assert relayed.status_code == 200 and relayed.json()["changed"] == 0
    assert (await VoiceSession.objects.aget(pk=session_id)).total_tokens == session.total_tokens

    assert await _items(session_id) == [
        ("user", "completed", "Hello, what can you do?"),
        (
            "assistant",
            "completed",
            "I can talk with you, and run tools like bash and file access when they are enabled.",
        ),
        ("user", "completed", "What is the weather like?"),
        (
            "assistant",
            "completed",
            "You said: What is the weather like?. This is the voiceplatform simulator.",
        ),
    ]
    assert session.input_tokens > 0 and session.total_tokens == (
        session.input_tokens + session.output_tokens
    )


RELAYED = [
    {"type": "input_audio_buffer.committed", "item_id": "item_u1"},
    {
        "type": "response.output_item.added",
        "item": {"id": "item_a1", "type": "message", "role": "assistant", "status": "in_progress"},
    },
    {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_u1",
        "transcript": "Turn on the lights",
    },
    {
        "type": "response.output_audio_transcript.done",
        "item_id": "item_a1",
        "transcript": "I cannot reach your lights.",
    },
    {
        "type": "response.done",
        "response": {
            "id": "resp_1",
            "usage": {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42},
        },
    },
    {"type": "rate_limits.updated", "rate_limits": []},
    {"type": "some.future.event", "payload": 1},
]


async def test_relayed_events_are_recorded_once_by_item_id(api, make_session):
    session = await make_session(status="active")
    url = f"/session/{session.pk}/events"

    first = await api.post(
        url, {"events": RELAYED}, content_type="application/json", headers=bearer(session)
    )
    second = await api.post(
        url, {"events": RELAYED}, content_type="application/json", headers=bearer(session)
    )

    assert first.status_code == second.status_code == 200
    assert first.json() == {"received": 7, "changed": 4}
    assert second.json()["changed"] == 0
    assert await _items(session.pk) == [
        ("user", "completed", "Turn on the lights"),
        ("assistant", "completed", "I cannot reach your lights."),
    ]
    await session.arefresh_from_db()
    assert (session.input_tokens, session.output_tokens, session.total_tokens) == (30, 12, 42)


async def test_a_late_partial_never_overwrites_a_final_transcript(api, make_session):
    session = await make_session(status="active")
    events = [
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "i1",
            "transcript": "final words",
        },
        {
            "type": "conversation.item.added",
            "item": {
                "id": "i1",
                "type": "message",
                "role": "user",
                "status": "in_progress",
                "content": [{"type": "input_text", "text": "partial"}],
            },
        },
    ]

    await api.post(
        f"/session/{session.pk}/events",
        {"events": events},
        content_type="application/json",
        headers=bearer(session),
    )

    assert await _items(session.pk) == [("user", "completed", "final words")]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "missing_field"),
        ({"events": "nope"}, 400, "invalid_events"),
        ({"events": [{"no_type": 1}]}, 400, "invalid_events"),
        ({"events": [1, 2]}, 400, "invalid_events"),
        ({"events": [], "extra": 1}, 400, "unknown_field"),
        ({"events": [{"type": "x"}] * 501}, 400, "invalid_events"),
    ],
)
async def test_it_rejects_malformed_event_posts(api, body, status, code, make_session):
    session = await make_session(status="active")

    response = await api.post(
        f"/session/{session.pk}/events",
        body,
        content_type="application/json",
        headers=bearer(session),
    )

    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_it_refuses_events_with_another_sessions_token(api, make_session):
    mine = await make_session(status="active")
    theirs = await make_session(status="active")

    response = await api.post(
        f"/session/{theirs.pk}/events",
        {"events": RELAYED},
        content_type="application/json",
        headers=bearer(mine),
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "wrong_session"
    assert await ConversationItem.objects.acount() == 0


async def test_it_refuses_events_for_an_ended_session(api, make_session):
    session = await make_session(status="ended")

    response = await api.post(
        f"/session/{session.pk}/events",
        {"events": RELAYED},
        content_type="application/json",
        headers=bearer(session),
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "session_ended"


@pytest.mark.parametrize(
    "events",
    [
        [{"type": "response.done", "response": {"id": "r1", "usage": {"input_tokens": "abc"}}}],
        [{"type": "response.done", "response": {"id": "r1", "usage": {"input_tokens": -5}}}],
        [{"type": "response.done", "response": {"id": "r1", "usage": {"input_tokens": 10**20}}}],
        [
            {
                "type": "conversation.item.added",
                "item": {"id": "i1", "type": "message", "content": 5},
            }
        ],
        [
            {
                "type": "conversation.item.added",
                "item": {"id": "i" * 500, "type": "function_call", "name": "n" * 500, "call_id": 7},
            }
        ],
        [{"type": "response.output_audio_transcript.done", "item_id": ["x"], "transcript": 1}],
    ],
)
async def test_odd_event_fields_are_tolerated_not_500(api, events, make_session):
    session = await make_session(status="active")

    response = await api.post(
        f"/session/{session.pk}/events",
        {"events": events},
        content_type="application/json",
        headers=bearer(session),
    )

    assert response.status_code == 200
    await session.arefresh_from_db()
    assert 0 <= session.input_tokens <= 10_000_000


@pytest.mark.parametrize(
    "body",
    [
        '{"events": [{"type": "x", "text": "nul\\u0000here"}]}',
        '{"events": [{"type": "x", "text": "\\udfff"}]}',
        '{"events": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
)
async def test_json_that_cannot_be_stored_is_400(api, body, make_session):
    session = await make_session(status="active")

    response = await api.post(
        f"/session/{session.pk}/events",
        body,
        content_type="application/json",
        headers=bearer(session),
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_a_browser_cannot_claim_usage_while_the_server_has_the_sideband(api, make_session):
    session = await make_session(status="active", sideband_connected=True)

    await api.post(
        f"/session/{session.pk}/events",
        {"events": RELAYED},
        content_type="application/json",
        headers=bearer(session),
    )

    await session.arefresh_from_db()
    assert session.total_tokens == 0


async def test_the_sideband_corrects_a_final_transcript_a_browser_relayed(api, make_session):
    from sessions_app import transcripts

    session = await make_session(status="active")
    claimed = {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "i1",
        "transcript": "what the browser claims",
    }
    heard = dict(claimed, transcript="what was said")

    await api.post(
        f"/session/{session.pk}/events",
        {"events": [claimed]},
        content_type="application/json",
        headers=bearer(session),
    )
    await transcripts.apply_events(session.pk, [heard], source="sideband")
    await transcripts.apply_events(session.pk, [claimed], source="client")

    assert await _items(session.pk) == [("user", "completed", "what was said")]
