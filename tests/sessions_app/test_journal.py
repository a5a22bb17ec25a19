"""The level-3 journal: what is written while the database is away waits, in order, in
Redis (or a spool file when Redis is away too) and is written once when it returns."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions_app import journal
from sessions_app.models import ConversationItem, VoiceSession
from tests.sessions_app.test_transcript import RELAYED
from tests.support import eventually

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_journal(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    journal._redis().delete(journal._key(), journal._key("replaying"))
    journal._snapshots.clear()
    yield
    journal._redis().delete(journal._key(), journal._key("replaying"))


@pytest.fixture
def database_away(monkeypatch):
    async def away() -> bool:
        return True

    monkeypatch.setattr(journal, "away", away)
    yield
    monkeypatch.undo()


class RedisAway:
    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("redis is away")

        return fail


def _session() -> VoiceSession:
    now = timezone.now()
    return VoiceSession(
        model="gpt-realtime",
        voice="marin",
        degradation_level=3,
        created_at=now,
        expires_at=now + timedelta(minutes=15),
    )


async def _a_conversation_while_away(session: VoiceSession) -> None:
    await journal.write(journal.created(session))
    await journal.remember(session)
    session.call_id, session.status = "rtc_journal_1", VoiceSession.Status.ACTIVE
    session.connected_at = timezone.now()
    await journal.write(journal.connected(session))
    for _ in range(2):  # the same events relayed twice
        await journal.write(
            journal.recorded(session.pk, RELAYED, source="client", count_usage=True)
        )
    session.status, session.end_reason = VoiceSession.Status.ENDED, VoiceSession.EndReason.CLIENT
    session.ended_at, session.duration_seconds = timezone.now(), 12.5
    await journal.write(journal.ended(session))
    await journal.remember(session)


async def _written(session_id: str) -> tuple[VoiceSession, list[tuple[str, str, str]]]:
    session = await VoiceSession.objects.aget(pk=session_id)
    items = [
        (item.item_id, item.role, item.text)
        async for item in ConversationItem.objects.filter(session_id=session_id)
    ]
    return session, items


EXPECTED_ITEMS = [
    ("item_u1", "user", "Turn on the lights"),
    ("item_a1", "assistant", "I cannot reach your lights."),
]


async def test_what_is_written_while_the_database_is_away_waits_and_is_written_once(
    database_away,
):
    session = _session()
    await _a_conversation_while_away(session)

    assert await journal.pending() == 5
    assert not await VoiceSession.objects.filter(pk=session.pk).aexists()
    served = await journal.lookup(session.pk)
    assert (served.status, served.call_id) == ("ended", "rtc_journal_1")


async def test_the_journal_is_written_in_order_when_the_database_returns(monkeypatch):
    session = _session()

    async def away() -> bool:
        return True

    monkeypatch.setattr(journal, "away", away)
    await _a_conversation_while_away(session)
    monkeypatch.undo()

    assert await journal.replay() == 5
    assert await journal.replay() == 0
    written, items = await _written(session.pk)
    assert (written.status, written.end_reason, written.call_id) == (
        "ended",
        "client",
        "rtc_journal_1",
    )
    assert written.duration_seconds == 12.5 and written.total_tokens == 42
    assert items == EXPECTED_ITEMS
    assert await journal.pending() == 0


async def test_new_writes_queue_behind_what_still_waits(monkeypatch):
    session = _session()

    async def away() -> bool:
        return True

    monkeypatch.setattr(journal, "away", away)
    await journal.write(journal.created(session))
    monkeypatch.undo()
    journal_was_pending = await journal.pending()

    # The database is back, but the session's row is not written yet: its events wait
    # behind it rather than fail.
    applied, _ = await journal.write(
        journal.recorded(session.pk, RELAYED, source="client", count_usage=True)
    )
    await journal.replay()  # or the replay that write started already runs

    async def all_written() -> bool:
        return await journal.pending() == 0

    assert journal_was_pending == 1 and not applied
    assert await eventually(all_written)
    _, items = await _written(session.pk)
    assert items == EXPECTED_ITEMS


async def test_with_redis_away_too_the_journal_is_a_spool_file(
    monkeypatch, database_away, settings
):
    monkeypatch.setattr(journal, "_redis", lambda: RedisAway())
    session = _session()
    await _a_conversation_while_away(session)
    spooled = (settings.VAR_DIR / "journal" / "spool.jsonl").read_text().count("\n")
    served = await journal.lookup(session.pk)  # from this process's snapshot

    async def back() -> bool:
        return False

    monkeypatch.setattr(journal, "away", back)
    written_ops = await journal.replay()

    assert spooled == 5 and served.status == "ended"
    assert written_ops == 5
    _, items = await _written(session.pk)
    assert items == EXPECTED_ITEMS
    assert await journal.pending() == 0


async def test_an_op_the_database_refuses_is_set_aside_and_the_rest_is_written(
    monkeypatch, settings
):
    async def away() -> bool:
        return True

    monkeypatch.setattr(journal, "away", away)
    await journal.write(
        journal.recorded("sess_unknown", RELAYED, source="client", count_usage=False)
    )
    session = _session()
    await journal.write(journal.created(session))
    monkeypatch.undo()

    assert await journal.replay() == 2
    assert await VoiceSession.objects.filter(pk=session.pk).aexists()
    refused = (settings.VAR_DIR / "journal" / "refused.jsonl").read_text()
    assert "sess_unknown" in refused


def test_a_snapshot_is_the_text_djangos_json_serializer_writes_and_reads_back():
    from django.core import serializers

    session = _session()
    session.instructions = 'Speak plainly: «quotes», "escapes" and ünïcode.'
    session.tools = [{"type": "function", "name": "bash", "parameters": {"type": "object"}}]
    session.connected_at = timezone.now()  # microseconds: Django's encoder trims them

    written = journal._serialized(session)

    assert written == serializers.serialize("json", [session])
    back = journal._deserialized(written)
    assert (back.pk, back.instructions, back.tools) == (
        session.pk,
        session.instructions,
        session.tools,
    )
    assert back.connected_at == session.connected_at.replace(
        microsecond=session.connected_at.microsecond // 1000 * 1000
    )
