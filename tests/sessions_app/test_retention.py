"""Retention (sessions_app.retention, apply_retention_task): transcripts (with their
summaries and topics), tool outputs and recordings go once their session has been over
for their number of days, and nothing else goes; every run is audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from ops_app.models import AuditEvent
from sessions_app.models import ConversationItem, VoiceSession
from sessions_app.tasks import apply_retention_task
from tools_app.models import ToolExecution

pytestmark = pytest.mark.django_db(transaction=True)

run_retention = sync_to_async(apply_retention_task)


@pytest.fixture(autouse=True)
def retention(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RETENTION_TRANSCRIPT_DAYS = 30
    settings.RETENTION_TOOL_OUTPUT_DAYS = 7
    settings.RETENTION_RECORDING_DAYS = 14
    settings.RETENTION_BATCH_SIZE = 2  # several batches per kind in these tests
    return settings


@sync_to_async
def _attach_files(session: VoiceSession) -> None:
    session.transcript_json.save(f"{session.pk}.json", ContentFile(b"[]"), save=False)
    session.transcript_text.save(f"{session.pk}.txt", ContentFile(b"[user] hi\n"), save=False)
    session.recording.save(f"{session.pk}.webm", ContentFile(b"webm"), save=False)
    session.save(update_fields=["transcript_json", "transcript_text", "recording"])


async def _session_with_data(make_session, make_item, *, ended_days_ago, **fields):
    """A session with three transcript items, exported files, a recording, a summary and
    a finished tool run, over since ended_days_ago (None: it never recorded an end)."""
    now = timezone.now()
    if ended_days_ago is not None:
        fields.setdefault("ended_at", now - timedelta(days=ended_days_ago))
        fields.setdefault("created_at", fields["ended_at"] - timedelta(minutes=10))
    summary = {
        "summary": "The caller asked about turn 0.",
        "outcome": "resolved",
        "topics": ["turns"],
        "summary_state": "done",
    }
    session = await make_session(**{"status": "ended", **summary, **fields})
    for n in range(3):
        await make_item(session=session, item_id=f"item_{n}", text=f"turn {n}")
    await _attach_files(session)
    await ToolExecution.objects.acreate(
        session=session,
        call_id="call_1",
        tool="bash",
        arguments={"command": "ls"},
        status=ToolExecution.Status.FAILED,
        output="ls: cannot open directory",
        error="exit code 2",
    )
    return session


async def _held(session: VoiceSession) -> dict:
    """What is left of a session's data."""
    await session.arefresh_from_db()
    run = await ToolExecution.objects.aget(session=session)
    names = [session.transcript_json.name, session.transcript_text.name, session.recording.name]
    return {
        "items": await ConversationItem.objects.filter(session=session).acount(),
        "transcript_files": bool(session.transcript_json or session.transcript_text),
        "recording": bool(session.recording),
        "tool_output": (run.output, run.error, run.arguments) != ("", "", {}),
        "tool_run": (run.tool, run.status),
        "files_in_storage": [bool(name) and default_storage.exists(name) for name in names],
        "summary": (bool(session.summary), session.topics, session.outcome),
    }


KEPT = {
    "items": 3,
    "transcript_files": True,
    "recording": True,
    "tool_output": True,
    "tool_run": ("bash", "failed"),
    "files_in_storage": [True, True, True],
    "summary": (True, ["turns"], "resolved"),
}


async def test_it_removes_exactly_what_is_past_its_time(make_session, make_item):
    old = await _session_with_data(make_session, make_item, ended_days_ago=31)
    middle = await _session_with_data(make_session, make_item, ended_days_ago=20)
    week = await _session_with_data(make_session, make_item, ended_days_ago=8)
    recent = await _session_with_data(make_session, make_item, ended_days_ago=6)
    never_ended = await _session_with_data(
        make_session,
        make_item,
        ended_days_ago=None,
        status="failed",
        created_at=timezone.now() - timedelta(days=40),
    )
    live = await _session_with_data(
        make_session,
        make_item,
        ended_days_ago=None,
        status="active",
        created_at=timezone.now() - timedelta(days=40),
    )

    removed = await run_retention()

    gone = {
        "items": 0,
        "transcript_files": False,
        "recording": False,
        "tool_output": False,
        "tool_run": ("bash", "failed"),  # the run stays, for counts and history
        "files_in_storage": [False, False, False],
        "summary": (False, [], "resolved"),  # what the call came to stays, for counts
    }
    assert await _held(old) == gone
    assert await _held(never_ended) == gone  # measured from its start
    assert await _held(middle) == KEPT | {
        "recording": False,
        "tool_output": False,
        "files_in_storage": [True, True, False],
    }
    assert await _held(week) == KEPT | {"tool_output": False}
    assert await _held(recent) == KEPT
    assert await _held(live) == KEPT
    assert removed == {
        "transcript_items": 6,
        "transcript_files": 2,
        "summaries": 2,
        "tool_outputs": 4,
        "recordings": 3,
    }
    assert await VoiceSession.objects.acount() == 6


async def test_a_second_run_removes_nothing_and_every_run_is_audited(make_session, make_item):
    await _session_with_data(make_session, make_item, ended_days_ago=31)

    first = await run_retention()
    second = await run_retention()

    assert first == {
        "transcript_items": 3,
        "transcript_files": 1,
        "summaries": 1,
        "tool_outputs": 1,
        "recordings": 1,
    }
    assert second == dict.fromkeys(first, 0)
    runs = [
        event
        async for event in AuditEvent.objects.filter(
            action=AuditEvent.Action.RETENTION_RUN
        ).order_by("id")
    ]
    assert [event.details["removed"] for event in runs] == [first, second]
    assert runs[0].actor_name == "system" and runs[0].actor is None
    assert runs[0].details["days"] == {"transcripts": 30, "tool_outputs": 7, "recordings": 14}


async def test_zero_days_keeps_everything_forever(make_session, make_item, retention):
    retention.RETENTION_TRANSCRIPT_DAYS = 0
    retention.RETENTION_TOOL_OUTPUT_DAYS = 0
    retention.RETENTION_RECORDING_DAYS = 0
    ancient = await _session_with_data(make_session, make_item, ended_days_ago=3650)

    removed = await run_retention()

    assert removed == dict.fromkeys(removed, 0)
    assert await _held(ancient) == KEPT


async def test_the_command_runs_it_once_and_says_what_went(make_session, make_item, capsys):
    old = await _session_with_data(make_session, make_item, ended_days_ago=31)

    await sync_to_async(call_command)("apply_retention")

    out = capsys.readouterr().out
    assert "transcript items: 3 removed" in out and "recordings: 1 removed" in out
    assert "summaries: 1 removed" in out
    assert (await _held(old))["items"] == 0
    await old.arefresh_from_db()
    assert old.summary_note == "Summary and topics removed with the transcript (retention)."
    event = await AuditEvent.objects.filter(action=AuditEvent.Action.RETENTION_RUN).afirst()
    assert event.actor_name.startswith("cli:")


def test_the_beat_schedule_runs_it(settings):
    from voiceplatform.celery import app

    (entry,) = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == apply_retention_task.name
    ]
    assert entry["schedule"] == settings.RETENTION_SWEEP_SECONDS
    assert entry["task"] in app.tasks
