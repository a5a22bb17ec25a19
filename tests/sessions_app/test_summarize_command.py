"""`manage.py summarize --since ...`: older ended sessions get their summaries (queued to
the workers, or written in process), with clear errors for what it cannot read."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from sessions_app.models import VoiceSession
from tests.factories import ConversationItemFactory, VoiceSessionFactory

pytestmark = pytest.mark.django_db(transaction=True)

SAID = [
    ("user", "My parcel to Lisbon has been stuck in customs for a week now."),
    ("assistant", "I have asked customs to release the parcel; it ships tomorrow."),
    ("user", "Thanks, that works."),
]


def _ended(days_ago: float, **fields) -> VoiceSession:
    ended = timezone.now() - timedelta(days=days_ago)
    session = VoiceSessionFactory(
        status=VoiceSession.Status.ENDED, created_at=ended - timedelta(minutes=5), ended_at=ended
    )
    VoiceSession.objects.filter(pk=session.pk).update(**fields)
    for n, (role, text) in enumerate(SAID):
        ConversationItemFactory(
            session=session, role=role, text=text, created_at=ended - timedelta(minutes=4 - n)
        )
    return session


def _summarize(capsys, *arguments: str) -> str:
    call_command("summarize", *arguments)
    return capsys.readouterr().out


def _states(*sessions: VoiceSession) -> list[str]:
    return [VoiceSession.objects.get(pk=s.pk).summary_state for s in sessions]


def test_it_writes_the_summaries_of_sessions_ended_since_then_in_process(simulator, capsys):
    recent = _ended(2)
    failed = _ended(3, summary_state="failed")
    done = _ended(1, summary_state="done", summary="Kept as it was.", outcome="follow_up")
    older = _ended(10)
    live = VoiceSessionFactory(status=VoiceSession.Status.ACTIVE)

    out = _summarize(capsys, "--since", "7d")

    assert out.startswith("Summarized 2 session(s) ended since ")
    assert out.strip().endswith("here: 2 done.")
    assert _states(recent, failed, done, older, live) == ["done", "done", "done", "", ""]
    assert VoiceSession.objects.get(pk=recent.pk).outcome == "resolved"
    assert VoiceSession.objects.get(pk=done.pk).summary == "Kept as it was."


def test_force_writes_the_done_ones_again_and_an_iso_date_reaches_back_to_it(simulator, capsys):
    done = _ended(1, summary_state="done", summary="Kept as it was.", outcome="follow_up")
    day = (timezone.localdate() - timedelta(days=20)).isoformat()
    older = _ended(15)

    out = _summarize(capsys, "--since", day, "--force")

    assert "Summarized 2 session(s)" in out and "here: 2 done." in out
    redone = VoiceSession.objects.get(pk=done.pk)
    assert redone.summary.startswith("The caller asked: “My parcel to Lisbon")
    assert redone.outcome == "resolved"
    assert _states(older) == ["done"]


def test_a_tiny_session_is_counted_as_skipped(simulator, capsys):
    tiny = VoiceSessionFactory(status="ended", ended_at=timezone.now() - timedelta(hours=1))
    ConversationItemFactory(session=tiny, text="Hello?")

    out = _summarize(capsys, "--since", "12h")

    assert "Summarized 1 session(s)" in out and "here: 1 skipped." in out


def test_with_a_broker_it_queues_them_and_says_how_many(real_celery, capsys):
    first, second = _ended(1), _ended(2)

    out = _summarize(capsys, "--since", "2w")

    assert out.startswith("Queued 2 session(s) ended since ")
    assert "the Celery workers write them" in out
    assert _states(first, second) == ["pending", "pending"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("yesterday", "is neither a span back from now"),
        ("7 days", "is neither a span back from now"),
        ("-7d", "is neither a span back from now"),
        ("0d", "is no time at all"),
        ("2025-02-30", "is neither a span back from now"),
        ("2999-01-01", "is in the future"),
    ],
)
def test_what_it_cannot_read_is_a_clear_error(value, problem):
    with pytest.raises(CommandError, match=problem):
        call_command("summarize", f"--since={value}")


def test_since_is_required():
    with pytest.raises(CommandError, match="--since"):
        call_command("summarize")
