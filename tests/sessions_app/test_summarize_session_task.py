"""Post-call summaries (summarize_session_task, queued when a session ends): written by
the simulator's model through the agents' provider, redacted, counted; tiny sessions
skipped; an upstream failure retried with growing waits, then marked failed, never
touching how the session ended."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from sessions_app.models import ConversationItem, VoiceSession
from sessions_app.tasks import summarize_session_task
from tests.factories import bearer
from tests.support import eventually, worker_running
from tools_app.agents import summaries

pytestmark = pytest.mark.django_db(transaction=True)

CALL = [
    ("user", "My March invoice shows a double charge for the subscription."),
    ("assistant", "I can see two March charges on your subscription."),
    ("assistant", "I have refunded the second March charge."),
    ("user", "Thanks, that works."),
]


@pytest.fixture(autouse=True)
def summaries_on(settings):
    settings.SUMMARY_ENABLED = True
    settings.SUMMARY_MIN_WORDS = 12
    settings.SUMMARY_MAX_RETRIES = 2
    settings.OPENAI_MAX_RETRIES = 0  # each try is one request: the task does the retrying
    return settings


@pytest.fixture
def conversation(make_session, make_item):
    """``session = await conversation(turns)``: a live session in which turns were said."""

    async def make(turns=CALL):
        start = timezone.now() - timedelta(minutes=3)
        session = await make_session(status="active", connected_at=start)
        for n, (role, text) in enumerate(turns):
            await make_item(
                session=session, role=role, text=text, created_at=start + timedelta(seconds=n)
            )
        return session

    return make


async def _end(api, session):
    return await api.post(f"/session/{session.pk}/end", headers=bearer(session))


async def _settled(session, timeout: float = 20):
    """The session once its summary is no longer pending (or as it was at the timeout)."""

    async def settled():
        fresh = await VoiceSession.objects.aget(pk=session.pk)
        return fresh if fresh.summary_state not in ("", "pending") else None

    return await eventually(settled, timeout) or await VoiceSession.objects.aget(pk=session.pk)


async def test_a_finished_conversation_gets_its_summary_outcome_and_topics(
    api, simulator, conversation
):
    session = await conversation()

    ended = await _end(api, session)
    session = await _settled(session)

    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert session.summary_state == "done", session.summary_note
    assert session.summary == (
        "The caller asked: “My March invoice shows a double charge for the subscription.” "
        "The assistant's last answer: “I have refunded the second March charge.”"
    )
    assert session.outcome == VoiceSession.Outcome.RESOLVED
    assert session.topics == ["march", "charge", "subscription"]
    assert session.summarized_at >= session.ended_at
    assert session.summary_input_tokens > 0 and session.summary_output_tokens > 0
    assert session.summary_cost_usd > 0
    # The summary is part of what the conversation cost (no voice usage was reported).
    assert session.cost_usd == session.summary_cost_usd
    assert session.total_tokens == session.summary_input_tokens + session.summary_output_tokens


async def test_the_summary_is_redacted_as_the_transcript_is(api, simulator, conversation, settings):
    settings.REDACT_SECRETS = False  # so the stored transcript still holds the key
    key = "sk-proj-" + "a1" * 16
    session = await conversation(
        [("user", f"My key {key} stopped working on the billing dashboard."), *CALL[1:]]
    )
    settings.REDACT_SECRETS = True

    await _end(api, session)
    session = await _settled(session)

    assert session.summary_state == "done"
    assert key not in session.summary and "[redacted:api_key]" in session.summary


@pytest.mark.parametrize(
    ("turns", "note"),
    [
        ([], "The caller said nothing (0 words)."),
        (
            [("user", "Hello?"), ("assistant", "Hi, how can I help?")],
            "Too little was said (6 words).",
        ),
        ([("assistant", "Welcome! " * 20)], "The caller said nothing (20 words)."),
    ],
)
async def test_an_empty_or_tiny_session_is_skipped_without_asking_the_model(
    api, simulator, conversation, turns, note
):
    simulator.fault("error", status=500, operations=["responses"])  # any request would fail
    session = await conversation(turns)

    await _end(api, session)
    session = await _settled(session)

    assert session.summary_state == "skipped"
    assert session.summary_note.startswith(note)
    assert (session.summary, session.outcome, session.topics) == ("", "", [])
    assert session.summary_cost_usd == 0


async def test_a_failing_model_is_tried_again_then_the_summary_is_failed_and_the_end_kept(
    api, simulator, conversation
):
    simulator.fault("error", status=503, operations=["responses"])
    session = await conversation()

    ended = await _end(api, session)
    session = await _settled(session)

    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert session.summary_state == "failed"
    assert session.summary_note == (
        "Failed after 3 tries: ProviderUnavailableError: The agent's model failed (503)."
    )
    assert session.summary == "" and session.outcome == ""
    # How the session ended is as the end left it.
    assert (session.status, session.end_reason) == ("ended", "client")
    assert session.ended_at.isoformat() == ended.json()["ended_at"]
    assert session.duration_seconds == ended.json()["duration_seconds"]


async def test_a_model_that_fails_twice_is_summarized_on_the_third_try(
    api, simulator, conversation
):
    simulator.fault("error", status=500, operations=["responses"], count=2)
    session = await conversation()

    await _end(api, session)
    session = await _settled(session)

    assert session.summary_state == "done" and session.outcome == "resolved"
    assert session.summary_note == ""


async def test_a_refused_key_is_not_tried_again(api, simulator, conversation, settings):
    settings.OPENAI_API_KEY = "sk-wrong-key"  # noqa: S105 (not a secret: refused)
    session = await conversation()

    await _end(api, session)
    session = await _settled(session)

    assert session.summary_state == "failed"
    assert session.summary_note.startswith("Failed after 1 try: AuthenticationError")


async def test_an_answer_that_is_not_the_json_asked_for_is_tried_again_never_a_crash(
    api, simulator, conversation, monkeypatch
):
    # Under another format name the simulator answers as an agent does: in prose.
    monkeypatch.setattr(summaries, "FORMAT_NAME", "not_a_call_summary")
    session = await conversation()

    await _end(api, session)
    session = await _settled(session)

    assert session.summary_state == "failed"
    assert session.summary_note == (
        "Failed after 3 tries: UnusableAnswer: The summary's model did not answer with JSON."
    )
    assert session.summary_input_tokens > 0  # three answers, paid for though unusable


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("Sure! Here is the summary.", "did not answer with JSON"),
        ('["a list"]', "did not answer with a JSON object"),
        ('{"summary": " ", "outcome": "resolved", "topics": []}', "gave no summary"),
        ('{"summary": "It went.", "outcome": "great", "topics": []}', "gave no known outcome"),
        ('{"summary": "It went.", "topics": []}', "gave no known outcome"),
    ],
)
def test_an_unusable_answer_says_what_was_wrong(answer, problem):
    with pytest.raises(summaries.UnusableAnswer, match=problem) as raised:
        summaries.parse(answer)

    assert raised.value.retryable


def test_a_usable_answer_is_taken_as_far_as_it_goes():
    answer = """```json
    {"summary": "The caller  was refunded.", "outcome": "Follow-up",
     "topics": ["Billing", "billing", 3, "", "Refund  Policy", "a", "b", "c", "d"]}
    ```"""

    parsed = summaries.parse(answer)

    assert parsed == summaries.Summary(
        summary="The caller was refunded.",
        outcome="follow_up",
        topics=["billing", "refund policy", "a", "b", "c"],
    )


async def test_summaries_off_leaves_ended_sessions_alone(api, simulator, conversation, settings):
    settings.SUMMARY_ENABLED = False
    session = await conversation()

    await _end(api, session)
    session = await VoiceSession.objects.aget(pk=session.pk)

    assert (session.summary_state, session.summary) == ("", "")


async def test_a_summary_is_not_written_twice_unless_forced(simulator, conversation):
    session = await conversation()
    await VoiceSession.objects.filter(pk=session.pk).aupdate(
        status="ended", ended_at=timezone.now()
    )
    run = sync_to_async(summarize_session_task)

    first = await run(session.pk)
    spent = (await VoiceSession.objects.aget(pk=session.pk)).summary_cost_usd
    again = await run(session.pk)
    unchanged = await VoiceSession.objects.aget(pk=session.pk)
    await ConversationItem.objects.acreate(
        session=session, item_id="late", role="user", text="Please call me back later."
    )
    forced = await run(session.pk, force=True)
    redone = await VoiceSession.objects.aget(pk=session.pk)

    assert (first, again, forced) == ("done", "done", "done")
    assert unchanged.summary_cost_usd == spent and unchanged.outcome == "resolved"
    assert redone.outcome == "follow_up"
    assert redone.summary_cost_usd > spent > Decimal(0)  # both requests were paid for


async def test_the_sweep_queues_a_summary_that_was_never_queued(simulator, conversation):
    from sessions_app.tasks import expire_sessions_task

    session = await conversation()
    await VoiceSession.objects.filter(pk=session.pk).aupdate(
        status="ended", ended_at=timezone.now() - timedelta(minutes=2)
    )

    await sync_to_async(expire_sessions_task)()

    assert (await VoiceSession.objects.aget(pk=session.pk)).summary_state == "done"


@pytest.fixture
def worker(real_celery, simulator, tmp_path):
    """A real worker whose summaries retry after half a second, then one."""
    env = {
        "OPENAI_BASE_URL": simulator.url,
        "OPENAI_API_KEY": "",
        "OPENAI_MAX_RETRIES": "0",
        "SUMMARY_RETRY_SECONDS": "0.5",
        "SUMMARY_MAX_RETRIES": "3",
    }
    with worker_running("summaries", tmp_path / "worker.log", env=env) as process:
        yield process


async def test_a_worker_retries_with_growing_waits_then_writes_it(
    api, simulator, conversation, worker
):
    simulator.fault("error", status=500, operations=["responses"], count=2)
    session = await conversation()
    notes: list[str] = []

    async def summarized():
        fresh = await VoiceSession.objects.aget(pk=session.pk)
        if fresh.summary_note and fresh.summary_note not in notes:
            notes.append(fresh.summary_note)
        return fresh.summary_state == "done" and fresh

    ended = await _end(api, session)
    session = await eventually(summarized, timeout=30)

    assert ended.status_code == 200
    assert session and session.outcome == "resolved"
    failed = "ProviderUnavailableError: The agent's model failed (500)."
    assert notes == [
        f"Try 1 failed: {failed} Trying again in 0.5 s.",
        f"Try 2 failed: {failed} Trying again in 1 s.",
    ]
