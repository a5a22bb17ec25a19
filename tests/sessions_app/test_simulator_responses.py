"""The simulator's Responses API (the agents' model), over real loopback HTTP, and our
provider module speaking to it through the openai SDK."""

from __future__ import annotations

import json

import httpx
import pytest
from amplifier_core import (
    ChatRequest,
    Message,
    ProviderUnavailableError,
    TextBlock,
    ToolCallBlock,
    ToolSpec,
)

from tools_app.agents.provider import ResponsesProvider

WRITE = {"type": "function", "name": "write_file", "description": "", "parameters": {}}


def post(simulator, body, **headers):
    return httpx.post(
        f"{simulator.url}/v1/responses", json=body, headers={**simulator.headers, **headers}
    )


def test_it_calls_write_file_for_an_instruction_naming_a_file_then_answers(simulator):
    request = {
        "model": "gpt-5-mini",
        "instructions": "You write notes.",
        "input": [{"role": "user", "content": "Create a file called todo.txt with milk"}],
        "tools": [WRITE],
    }

    first = post(simulator, request).json()
    call = first["output"][0]
    request["input"] += [
        {k: call[k] for k in ("type", "call_id", "name", "arguments")},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "Wrote 4 bytes."},
    ]
    second = post(simulator, request).json()

    assert first["object"] == "response" and first["status"] == "completed"
    assert call["type"] == "function_call" and call["name"] == "write_file"
    assert json.loads(call["arguments"]) == {"file_path": "todo.txt", "content": "milk"}
    assert second["output"][0]["type"] == "message"
    assert second["output"][0]["content"][0]["text"] == "Done. I wrote todo.txt."
    assert second["usage"]["total_tokens"] == (
        second["usage"]["input_tokens"] + second["usage"]["output_tokens"]
    )


def test_it_echoes_the_first_line_of_its_instructions_otherwise(simulator):
    answer = post(
        simulator,
        {"model": "m", "instructions": "You are the echo agent.\nMore.", "input": "Say hi"},
    ).json()

    text = answer["output"][0]["content"][0]["text"]
    assert "You are the echo agent." in text and "Say hi" in text and "More." not in text


def test_it_does_not_call_a_tool_it_was_not_offered(simulator):
    answer = post(simulator, {"model": "m", "input": "run `ls`", "tools": [WRITE]}).json()

    assert answer["output"][0]["type"] == "message"
    assert "the tool bash is not available" in answer["output"][0]["content"][0]["text"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"model": "m", "input": "x"}, {"Authorization": "Bearer wrong"}, 401),
        ({"input": "x"}, {}, 400),
        ({"model": "m", "input": 3}, {}, 400),
        ([1, 2], {}, 400),
    ],
)
def test_it_refuses_bad_requests_in_openais_error_shape(simulator, body, headers, status):
    response = post(simulator, body, **headers)

    assert response.status_code == status
    assert set(response.json()["error"]) >= {"message", "type", "code"}


async def test_the_provider_turns_a_chat_request_into_tool_calls_usage_and_cost(simulator):
    provider = ResponsesProvider({"model": "gpt-5-mini"})
    request = ChatRequest(
        messages=[
            Message(role="system", content="You write notes."),
            Message(role="user", content="write notes.md about otters"),
        ],
        tools=[ToolSpec(name="write_file", parameters={"type": "object"})],
    )
    try:
        first = await provider.complete(request)
        call = provider.parse_tool_calls(first)[0]
        request.messages += [
            Message(
                role="assistant",
                content=[ToolCallBlock(id=call.id, name=call.name, input=call.arguments)],
            ),
            Message(role="tool", tool_call_id=call.id, content="Wrote it."),
        ]
        second = await provider.complete(request)
    finally:
        await provider.close()

    assert call.name == "write_file" and call.arguments["file_path"] == "notes.md"
    assert isinstance(second.content[0], TextBlock)
    assert second.content[0].text == "Done. I wrote notes.md."
    assert second.tool_calls is None
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    assert first.usage.cost_usd > 0


async def test_the_provider_reports_an_upstream_failure_as_an_llm_error(simulator, settings):
    settings.OPENAI_MAX_RETRIES = 0
    simulator.fault("error", status=503, operations=["responses"])
    provider = ResponsesProvider()
    try:
        with pytest.raises(ProviderUnavailableError):
            await provider.complete(ChatRequest(messages=[Message(role="user", content="hi")]))
    finally:
        await provider.close()


SUMMARY_FORMAT = {"format": {"type": "json_schema", "name": "call_summary", "schema": {}}}
CALL = """\
Caller: My March invoice shows a double charge for the subscription.
Assistant: I can see two March charges on your subscription.
Tool call: bash
Assistant: I have refunded the second March charge.
Caller: {last}"""


def _summary(simulator, transcript):
    answer = post(
        simulator,
        {"model": "m", "instructions": "Summarize.", "input": transcript, "text": SUMMARY_FORMAT},
    ).json()
    return json.loads(answer["output"][0]["content"][0]["text"])


def test_it_answers_a_call_summary_from_the_first_request_and_the_last_answer(simulator):
    answer = _summary(simulator, CALL.format(last="Thanks, that works."))

    assert answer == {
        "summary": "The caller asked: “My March invoice shows a double charge for the "
        "subscription.” The assistant's last answer: “I have refunded the second March "
        "charge.”",
        "outcome": "resolved",
        "topics": ["march", "charge", "subscription"],
    }


@pytest.mark.parametrize(
    ("last", "outcome"),
    [
        ("Thank you, that solved it.", "resolved"),
        ("Please call me back tomorrow.", "follow_up"),
        ("Thanks, but I will follow up later.", "follow_up"),  # follow-up words win
        ("It still does not show.", "not_resolved"),
    ],
)
def test_a_summarys_outcome_follows_what_the_caller_said(simulator, last, outcome):
    assert _summary(simulator, CALL.format(last=last))["outcome"] == outcome


def test_the_assistants_thanks_do_not_resolve_a_call(simulator):
    transcript = "Caller: My order never came.\nAssistant: Thanks for calling, goodbye."

    assert _summary(simulator, transcript)["outcome"] == "not_resolved"


def test_the_same_transcript_gets_the_same_summary(simulator):
    transcript = CALL.format(last="I will call back later.")

    assert _summary(simulator, transcript) == _summary(simulator, transcript)


def test_without_the_summary_format_the_request_is_an_agents(simulator):
    answer = post(simulator, {"model": "m", "input": CALL.format(last="Thanks.")}).json()

    assert answer["output"][0]["content"][0]["text"].startswith("Done.")
