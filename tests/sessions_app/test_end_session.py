"""Ending sessions: on purpose, by lifetime, exactly once; the transcript exported."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from sessions_app.models import VoiceSession
from sessions_app.probe import open_call
from sessions_app.tasks import expire_sessions_task
from tests.factories import VoiceSessionFactory, bearer

pytestmark = pytest.mark.django_db(transaction=True)


async def test_ending_a_call_hangs_up_and_exports_the_transcript(http, simulator):
    call = await open_call(http)
    session_id = call.session["session_id"]
    call.say("Good morning")
    await call.wait_for(
        lambda e: (
            e["type"] == "response.output_audio_transcript.done"
            and "Good morning" in e["transcript"]
        )
    )

    response = await http.post(
        f"/session/{session_id}/end",
        headers={"Authorization": f"Bearer {call.session['session_token']}"},
    )
    await call.close()

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ended" and body["end_reason"] == "client"
    assert body["duration_seconds"] > 0
    assert simulator.call(call.call_id)["state"] == "hung_up"
    session = await VoiceSession.objects.aget(pk=session_id)
    assert session.ended_at is not None
    exported = json.loads(await sync_to_async(session.transcript_json.read)())
    assert {"role": "user", "text": "Good morning"}.items() <= exported[-2].items()
    text = (await sync_to_async(session.transcript_text.read)()).decode()
    assert "[user] Good morning\n" in text and "[assistant] You said: Good morning" in text


async def test_ending_twice_changes_nothing_the_second_time(api, make_session, make_item):
    session = await make_session(status="active", connected_at=timezone.now())
    await make_item(session=session, text="only words")

    first = await api.post(f"/session/{session.pk}/end", headers=bearer(session))
    second = await api.post(f"/session/{session.pk}/end", headers=bearer(session))

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    session = await VoiceSession.objects.aget(pk=session.pk)
    assert session.transcript_text.name.endswith(f"{session.pk}.txt")


async def test_end_needs_the_sessions_own_token(api, make_session):
    mine = await make_session(status="active")
    theirs = await make_session(status="active")

    wrong = await api.post(f"/session/{theirs.pk}/end", headers=bearer(mine))
    missing = await api.post(f"/session/{theirs.pk}/end")
    get = await api.get(f"/session/{theirs.pk}/end", headers=bearer(theirs))

    assert (wrong.status_code, missing.status_code, get.status_code) == (403, 401, 405)
    assert (await VoiceSession.objects.aget(pk=theirs.pk)).status == "active"


def test_the_periodic_task_expires_overdue_sessions_only():
    now = timezone.now()
    overdue = VoiceSessionFactory(
        status="active",
        created_at=now - timedelta(minutes=16),
        connected_at=now - timedelta(minutes=16),
        expires_at=now - timedelta(minutes=1),
    )
    current = VoiceSessionFactory(status="active", expires_at=now + timedelta(minutes=5))

    assert expire_sessions_task() == 1

    overdue.refresh_from_db()
    current.refresh_from_db()
    assert overdue.status == "expired" and overdue.end_reason == "max_duration"
    assert 955 <= overdue.duration_seconds <= 965
    assert current.status == "active"
