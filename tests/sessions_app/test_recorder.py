"""The held calls' transcript writer (sessions_app.recorder): batches keep each call's
order, lose nothing under load, count usage once, and give way to the journal."""

from __future__ import annotations

import asyncio

import pytest

from sessions_app import journal, recorder, transcripts
from sessions_app.models import ConversationItem as Item
from sessions_app.models import VoiceSession

pytestmark = pytest.mark.django_db(transaction=True)


def _turn(n: int, user: str, reply: str) -> list[dict]:
    """One turn's events as a call's sideband says them (deltas aside)."""
    user_id, reply_id = f"item_u{n}", f"item_a{n}"
    return [
        {"type": "input_audio_buffer.committed", "item_id": user_id},
        {
            "type": "conversation.item.added",
            "item": {
                "id": user_id,
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}],
            },
        },
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": user_id,
            "transcript": user,
        },
        {
            "type": "response.output_item.added",
            "item": {"id": reply_id, "type": "message", "role": "assistant", "content": []},
        },
        {"type": "response.output_audio_transcript.done", "item_id": reply_id, "transcript": reply},
        {
            "type": "response.output_item.done",
            "item": {
                "id": reply_id,
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_audio", "transcript": reply}],
            },
        },
        {
            "type": "response.done",
            "response": {
                "id": f"resp_{n}",
                "usage": {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30},
            },
        },
    ]


async def _record_one_by_one(session_id: str, realtime_events: list[dict]) -> None:
    written = None
    for event in realtime_events:  # as the listener hands them in
        written = await recorder.record(session_id, [event]) or written
    await written


async def _transcript(session_id: str) -> list[tuple[str, str, str]]:
    return [
        (item.role, item.status, item.text)
        async for item in Item.objects.filter(session_id=session_id).order_by("created_at", "id")
    ]


async def test_a_calls_turns_are_written_in_the_order_they_were_said(make_session):
    session = await make_session(status="active")
    events = _turn(1, "What time is it?", "It is noon.") + _turn(2, "Thanks.", "Anytime.")

    await _record_one_by_one(session.pk, events)

    assert await _transcript(session.pk) == [
        ("user", "completed", "What time is it?"),
        ("assistant", "completed", "It is noon."),
        ("user", "completed", "Thanks."),
        ("assistant", "completed", "Anytime."),
    ]
    session = await VoiceSession.objects.aget(pk=session.pk)
    assert (session.input_tokens, session.output_tokens, session.total_tokens) == (20, 40, 60)


async def test_many_calls_talking_at_once_lose_no_item(make_session):
    sessions = [await make_session(status="active") for _ in range(40)]

    async def talk(session):
        for n in range(5):
            await _record_one_by_one(session.pk, _turn(n, f"question {n}", f"answer {n}"))

    await asyncio.gather(*(talk(session) for session in sessions))

    for session in sessions:
        texts = [text for _, _, text in await _transcript(session.pk)]
        assert texts == [t for n in range(5) for t in (f"question {n}", f"answer {n}")]
        assert (await VoiceSession.objects.aget(pk=session.pk)).total_tokens == 5 * 30


async def test_a_full_batch_makes_the_calls_wait_for_the_writer_and_nothing_is_dropped(
    make_session, settings
):
    settings.SIDEBAND_RECORD_BATCH_MAX = 10
    session = await make_session(status="active")
    events = [event for n in range(20) for event in _turn(n, f"q{n}", f"a{n}")]

    await _record_one_by_one(session.pk, events)

    assert len(await _transcript(session.pk)) == 40


async def test_a_response_relayed_by_the_browser_too_is_counted_once(make_session):
    session = await make_session(status="active")
    events = _turn(1, "Hello?", "Hi there.")

    await _record_one_by_one(session.pk, events)
    await transcripts.apply_events(session.pk, events, source=Item.Source.CLIENT)

    assert (await VoiceSession.objects.aget(pk=session.pk)).total_tokens == 30


async def test_the_sideband_corrects_a_final_text_the_browser_relayed_first(
    make_session, make_item
):
    session = await make_session(status="active")
    await make_item(
        session=session,
        item_id="item_a1",
        role="assistant",
        status="completed",
        text="It is nun.",
        source=Item.Source.CLIENT,
    )

    await _record_one_by_one(session.pk, _turn(1, "What time is it?", "It is noon."))

    item = await Item.objects.aget(session=session, item_id="item_a1")
    assert (item.text, item.source) == ("It is noon.", Item.Source.SIDEBAND)


async def test_an_item_another_writer_inserted_meanwhile_is_merged_not_lost(
    make_session, make_item, monkeypatch
):
    session = await make_session(status="active")
    await make_item(
        session=session,
        item_id="item_u1",
        role="user",
        status="in_progress",
        text="",
        source=Item.Source.CLIENT,
    )
    # The batch's read does not see the row: it was inserted between read and insert.
    real = recorder._existing
    calls = []

    def not_yet_seen(keys):
        calls.append(keys)
        return {} if len(calls) == 1 else real(keys)

    monkeypatch.setattr(recorder, "_existing", not_yet_seen)

    await _record_one_by_one(session.pk, _turn(1, "Is anyone there?", "Yes."))

    items = [i async for i in Item.objects.filter(session=session, item_id="item_u1")]
    assert [(i.text, i.status) for i in items] == [("Is anyone there?", "completed")]


async def test_while_the_database_is_away_a_batch_goes_to_the_journal_and_is_replayed(
    make_session, monkeypatch
):
    session = await make_session(status="active")

    async def away() -> bool:
        return True

    monkeypatch.setattr(journal, "away", away)
    await _record_one_by_one(session.pk, _turn(1, "Hello?", "Hi."))
    assert await _transcript(session.pk) == []
    assert await journal.pending() == 1

    monkeypatch.undo()
    await journal.replay()

    assert [text for _, _, text in await _transcript(session.pk)] == ["Hello?", "Hi."]
    assert (await VoiceSession.objects.aget(pk=session.pk)).total_tokens == 30


async def test_events_that_say_nothing_of_the_transcript_are_not_handed_to_the_writer(
    make_session,
):
    session = await make_session(status="active")

    written = await recorder.record(session.pk, [{"type": "rate_limits.updated"}])

    assert written is None


async def test_a_batch_that_fails_is_written_event_by_event_and_its_usage_still_counts(
    make_session, monkeypatch
):
    session = await make_session(status="active")

    def refused(batch, counted):
        raise ValueError("a value the statement refused")

    monkeypatch.setattr(recorder, "_write_rows", refused)

    await _record_one_by_one(session.pk, _turn(1, "Hello?", "Hi."))

    assert [text for _, _, text in await _transcript(session.pk)] == ["Hello?", "Hi."]
    assert (await VoiceSession.objects.aget(pk=session.pk)).total_tokens == 30


async def test_a_response_told_twice_in_one_batch_is_counted_once(make_session):
    session = await make_session(status="active")
    done = _turn(1, "Hello?", "Hi.")[-1]

    written = await recorder.record(session.pk, [done, done])
    await written

    assert (await VoiceSession.objects.aget(pk=session.pk)).total_tokens == 30
