"""Calls that talk at a real conversation's pace (the simulator's load mode) and what the
server makes of them: every turn recorded once and in order, deltas never decoded."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sessions_app import sideband
from sessions_app.models import ConversationItem
from sessions_app.probe import open_call
from tests.support import eventually

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {
    "user_seconds": 0.2,
    "reply_seconds": 0.3,
    "pause_seconds": 0.1,
    "deltas_per_second": 20,
    "tool_every": 2,
}


def _traffic(simulator, method: str, body: dict | None = None, **headers) -> httpx.Response:
    return httpx.request(
        method,
        f"{simulator.url}/_control/traffic",
        json=body,
        headers={**simulator.headers, **headers},
    )


async def test_a_talking_call_is_recorded_turn_by_turn_in_order_with_its_tool_calls(
    http, simulator
):
    call = await open_call(http)
    session_id = call.session["session_id"]
    items = ConversationItem.objects.filter(session_id=session_id)
    try:
        # The scripted caller's own first turn (voice activity), recorded first.
        await call.wait_for(lambda e: e["type"] == "response.done")

        async def first_turn_recorded():
            return await items.filter(status="completed").acount() == 2

        assert await eventually(first_turn_recorded)
        started = _traffic(
            simulator, "POST", {"seconds": 2.5, "call_ids": [call.call_id], "pace": FAST}
        )
        assert started.json()["started"] == 1

        async def quiet():
            return _traffic(simulator, "GET").json()["talking"] == 0

        assert await eventually(quiet, timeout=20)
        stats = _traffic(simulator, "GET").json()

        async def all_recorded():
            return await items.acount() >= 2 + stats["items"]

        assert await eventually(all_recorded, timeout=20)
        talked = [item async for item in items.order_by("created_at", "id")][2:]
    finally:
        await call.close()

    assert stats["turns"] >= 2 and stats["tool_calls"] >= 1
    kinds = [(item.kind, item.role) for item in talked]
    # Each turn: the caller, then the model's reply, or its tool call, the tool's
    # output and the reply that follows it.
    plain = [("message", "user"), ("message", "assistant")]
    tool = [
        ("message", "user"),
        ("function_call", "assistant"),
        ("function_call_output", "tool"),
        ("message", "assistant"),
    ]
    expected = []
    for turn in range(1, stats["turns"] + 1):
        expected += tool if turn % FAST["tool_every"] == 0 else plain
    assert kinds == expected
    assert all(item.status == "completed" for item in talked)
    assert all(item.text for item in talked if item.kind == "message")


async def test_a_talking_calls_events_follow_a_turns_order(http, simulator):
    call = await open_call(http)
    try:
        await call.wait_for(lambda e: e["type"] == "response.done")  # the scripted turn
        pace = {**FAST, "tool_every": 0}
        # Longer than a turn's lead-in (each call starts at a random point of one).
        _traffic(simulator, "POST", {"seconds": 1.0, "call_ids": [call.call_id], "pace": pace})

        async def quiet():
            return _traffic(simulator, "GET").json()["talking"] == 0

        assert await eventually(quiet, timeout=20)
        assert _traffic(simulator, "GET").json()["turns"] >= 1
        await asyncio.sleep(0.5)  # the last stop of the voice
        sent = simulator.call(call.call_id)["events_sent"]
    finally:
        await call.close()

    # The last turn (the first is the scripted caller's own).
    first = len(sent) - 1 - sent[::-1].index("input_audio_buffer.speech_started")
    turn = [kind for kind in sent[first:] if not kind.endswith(".delta")]
    assert turn[:12] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "output_audio_buffer.started",
        "response.output_audio_transcript.done",
        "response.content_part.done",
    ]
    assert sent.count("response.output_audio_transcript.delta") >= 5  # at speech rate


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"seconds": 0}, 400),
        ({"seconds": -1}, 400),
        ({"seconds": True}, 400),
        ({"seconds": 10_000}, 400),
        ({"seconds": "5"}, 400),
        ({"seconds": 5, "pace": {"deltas_per_second": 0}}, 400),
        ({"seconds": 5, "pace": {"user_seconds": -1}}, 400),
        ({"seconds": 5, "pace": {"tool": ""}}, 400),
        ({"seconds": 5, "pace": {"reply_seconds": "long"}}, 400),
        ({"seconds": 5, "pace": "fast"}, 400),
        ({"seconds": 5, "call_ids": "rtc_x"}, 400),
        ({"seconds": 5, "call_ids": ["rtc_unknown"]}, 404),
        ({"seconds": 5, "seed": "x"}, 400),
    ],
)
def test_a_bad_traffic_request_is_refused_with_a_clear_error(simulator_process, body, status):
    answer = _traffic(simulator_process, "POST", body)

    assert answer.status_code == status
    assert answer.json()["error"]["message"]


def test_traffic_control_answers_only_the_server_key(simulator_process):
    answer = httpx.post(
        f"{simulator_process.url}/_control/traffic",
        json={"seconds": 5},
        headers={"Authorization": "Bearer sk-wrong"},
    )

    assert answer.status_code == 401


def test_traffic_can_be_stopped_and_read(simulator_process):
    assert _traffic(simulator_process, "DELETE").json() == {"stopped": 0}
    assert _traffic(simulator_process, "PUT", {}).status_code == 405
    stats = _traffic(simulator_process, "GET").json()
    assert {"talking", "turns", "items", "tool_calls", "sideband_events_sent"} <= set(stats)


@pytest.mark.parametrize(
    ("raw", "delta"),
    [
        (b'{"event_id":"e1","type":"response.output_audio_transcript.delta","delta":"Hi"}', True),
        (b'{"type": "conversation.item.input_audio_transcription.delta", "delta": "x"}', True),
        (b'{"type":"response.function_call_arguments.delta","delta":"{"}', True),
        (b'{"type":"response.output_audio_transcript.done","transcript":"Hi"}', False),
        # A transcript quoting a delta's type is text: its quotes are escaped.
        (
            b'{"type":"conversation.item.input_audio_transcription.completed",'
            b'"transcript":"say \\"type\\": \\"x.delta\\""}',
            False,
        ),
        (b'{"type":"response.done","response":{"output":[{"type":"a.delta"}]}}', False),
    ],
)
def test_only_streamed_pieces_are_left_undecoded(raw, delta):
    assert sideband._is_delta(raw) is delta
