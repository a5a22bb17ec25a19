"""A task the model started on a live call: the conversation goes on while it runs, and
its result is told to the model once, after the response in progress; a call that has
ended keeps the result instead."""

from __future__ import annotations

import pytest

from sessions_app.models import ConversationItem
from sessions_app.probe import open_call
from tests.support import eventually, held
from tools_app.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def transcript_done(text: str):
    return lambda e: (
        e["type"] == "response.output_audio_transcript.done" and text in e.get("transcript", "")
    )


async def test_the_model_keeps_talking_while_a_task_runs_and_hears_its_result_once(
    http, simulator, settings
):
    settings.TASK_DETACH_AFTER_SECONDS = 0.5
    call = await open_call(http)
    session_id = call.session["session_id"]
    try:
        await held(call)
        call.say("Please run 'sleep 3; echo finished-$((4000+242))'")
        started = await call.wait_for(transcript_done("Started task"), timeout=15)
        call.say("What is the weather like")
        meanwhile = await call.wait_for(transcript_done("What is the weather like"), timeout=15)
        told = await call.wait_for(transcript_done("finished-4242"), timeout=30)

        async def recorded():
            return await ConversationItem.objects.filter(
                session_id=session_id, role="assistant", text__contains="finished-4242"
            ).aexists()

        assert await eventually(recorded, timeout=10)
    finally:
        await call.close()

    task = await Task.objects.aget(session_id=session_id)
    spoken = [
        e
        for e in call.events
        if e["type"] == "response.output_audio_transcript.done"
        and "finished-4242" in e["transcript"]
    ]
    order = [id(e) for e in call.events]
    assert task.status == "succeeded" and task.delivery == "spoken"
    assert len(spoken) == 1  # told once
    assert order.index(id(started)) < order.index(id(meanwhile)) < order.index(id(told))
    # The turn while it ran was recorded before the task ended.
    turn = await ConversationItem.objects.aget(
        session_id=session_id, role="assistant", text__contains="What is the weather like"
    )
    assert turn.created_at < task.finished_at


async def test_a_result_that_comes_after_the_call_ended_is_kept_not_spoken(
    http, simulator, settings
):
    settings.TASK_DETACH_AFTER_SECONDS = 0.5
    call = await open_call(http)
    session_id = call.session["session_id"]
    auth = {"Authorization": f"Bearer {call.session['session_token']}"}
    try:
        await held(call)
        call.say("Please run 'sleep 2; echo late-result'")
        await call.wait_for(transcript_done("Started task"), timeout=15)
        ended = await http.post(call.session["urls"]["end"], headers=auth)
    finally:
        await call.close()

    async def finished():
        task = await Task.objects.aget(session_id=session_id)
        return task if task.status != "running" else None

    task = await eventually(finished, timeout=20)
    assert ended.status_code == 200
    assert task.status == "succeeded" and task.delivery == "kept"
    assert "late-result" in task.output
