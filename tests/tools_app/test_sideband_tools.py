"""The model's function call, seen on the sideband, is executed and answered upstream."""

from __future__ import annotations

import pytest

from sessions_app.models import ConversationItem
from sessions_app.probe import open_call
from tests.support import eventually, held
from tools_app.models import ToolExecution

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_sideband_runs_the_models_tool_call_and_the_model_hears_the_output(
    http, simulator
):
    call = await open_call(http)
    session_id = call.session["session_id"]
    relay = {"Authorization": f"Bearer {call.session['session_token']}"}
    try:
        await held(call)
        written = await http.post(
            "/tools/write_file",
            headers=relay,
            json={"call_id": "call_seed", "arguments": {"file_path": "notes.txt", "content": "x"}},
        )
        call.say("Please list files")
        reply = await call.wait_for(
            lambda e: (
                e["type"] == "response.output_audio_transcript.done"
                and e["transcript"].startswith("Here is what I found")
            ),
            timeout=30,  # a real worker runs it: generous for a loaded machine
        )
        function_call = next(
            e["item"]
            for e in call.events
            if e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call"
        )
        # The browser relays the same call: it gets the same result, nothing runs twice.
        relayed = await http.post(
            "/tools/bash",
            headers=relay,
            json={"call_id": function_call["call_id"], "arguments": {"command": "ls -la"}},
        )

        async def transcript_has_output():
            return await ConversationItem.objects.filter(
                session_id=session_id, kind="function_call_output"
            ).aexists()

        assert await eventually(transcript_has_output)
    finally:
        await call.close()

    # The call is refused while the sideband holds it: the server saw no such call.
    assert written.status_code == 409
    assert "notes.txt" not in reply["transcript"]
    assert "total" in reply["transcript"]  # ls -la's first line reached the model
    execution = await ToolExecution.objects.aget(session_id=session_id)
    assert execution.origin == "sideband" and execution.status == "succeeded"
    assert execution.call_id == function_call["call_id"] and execution.tool == "bash"
    assert relayed.status_code == 200 and relayed.json()["output"] == execution.output
    kinds = [item.kind async for item in ConversationItem.objects.filter(session_id=session_id)]
    assert kinds.index("function_call") < kinds.index("function_call_output")


async def test_a_call_for_a_tool_the_session_lacks_is_answered_with_a_reason(
    http, simulator, settings
):
    settings.TOOLS_FOR_ANONYMOUS = ["read_file"]
    call = await open_call(http)
    try:
        await held(call)
        call.say("Please list files")
        reply = await call.wait_for(
            lambda e: (
                e["type"] == "response.output_audio_transcript.done"
                and "list files" in e["transcript"].lower()
                or e["type"] == "response.output_audio_transcript.done"
                and "can't execute" in e["transcript"]
            ),
            timeout=10,
        )
    finally:
        await call.close()

    assert "can't execute tasks" in reply["transcript"]
    assert await ToolExecution.objects.acount() == 0
