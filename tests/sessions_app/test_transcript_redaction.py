"""Redaction as transcripts are stored: what was said is kept without its secrets (and,
with REDACT_PII, without e-mail addresses and phone numbers); a call's arguments are
redacted once the session is over, before the transcript is exported."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from sessions_app.models import ConversationItem
from sessions_app.tasks import export_transcript_task
from tests.factories import bearer

pytestmark = pytest.mark.django_db(transaction=True)

SAID = "card 4111 1111 1111 1111, mail jane@example.com, key sk-proj-0123456789abcdefghijKLMN"
ARGUMENTS = json.dumps({"command": "curl -H 'Authorization: Bearer abc123def456ghi789jkl' x"})


def _events():
    return [
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_said",
            "transcript": SAID,
        },
        {
            "type": "conversation.item.done",
            "item": {
                "id": "item_call",
                "type": "function_call",
                "status": "completed",
                "name": "bash",
                "call_id": "call_1",
                "arguments": ARGUMENTS,
            },
        },
    ]


async def _relay(api, session):
    response = await api.post(
        f"/session/{session.pk}/events",
        {"events": _events()},
        content_type="application/json",
        headers=bearer(session),
    )
    assert response.status_code == 200


async def _stored(session, item_id: str) -> ConversationItem:
    return await ConversationItem.objects.aget(session=session, item_id=item_id)


async def test_secrets_said_are_redacted_as_they_are_stored(api, make_session, settings):
    settings.REDACT_SECRETS, settings.REDACT_PII = True, False
    session = await make_session(status="active")

    await _relay(api, session)

    said = await _stored(session, "item_said")
    assert said.text == "card [redacted:card], mail jane@example.com, key [redacted:api_key]"
    # Arguments stay as called while the session lives: a takeover may still run them.
    assert (await _stored(session, "item_call")).arguments == ARGUMENTS


async def test_with_redact_pii_e_mail_addresses_go_too(api, make_session, settings):
    settings.REDACT_SECRETS, settings.REDACT_PII = True, True
    session = await make_session(status="active")

    await _relay(api, session)

    assert "[redacted:email]" in (await _stored(session, "item_said")).text


async def test_with_redaction_off_the_text_is_stored_as_said(api, make_session, settings):
    settings.REDACT_SECRETS, settings.REDACT_PII = False, False
    session = await make_session(status="active")

    await _relay(api, session)

    assert (await _stored(session, "item_said")).text == SAID


async def test_a_calls_arguments_are_redacted_before_the_export(
    api, make_session, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.REDACT_SECRETS, settings.REDACT_PII = True, False
    session = await make_session(status="active")
    await _relay(api, session)
    session.status = "ended"
    await session.asave(update_fields=["status"])

    await sync_to_async(export_transcript_task)(session.pk)

    stored = (await _stored(session, "item_call")).arguments
    assert json.loads(stored) == {"command": "curl -H 'Authorization: Bearer [redacted:token]' x"}
    await session.arefresh_from_db()
    exported = (tmp_path / "media" / session.transcript_json.name).read_text()
    assert "abc123def456ghi789jkl" not in exported and "4111" not in exported
    assert "[redacted:token]" in exported
