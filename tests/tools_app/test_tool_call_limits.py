"""What one session and one caller may hold of the tool workers, and what their calls
may send: refused at both doors (POST /tools/<name> and the model's calls on the
sideband), a repeat of a call already made never refused."""

from __future__ import annotations

import json
from functools import partial

import pytest

from tests.factories import bearer
from tools_app import actions, policy
from tools_app.models import ToolExecution

pytestmark = pytest.mark.django_db(transaction=True)

RUNNING = ToolExecution.Status.RUNNING
QUEUED = ToolExecution.Status.QUEUED


@pytest.fixture
def make_live_session(make_session):
    tools = policy.definitions(["bash", "read_file", "write_file"])
    return partial(make_session, status="active", tools=tools)


async def call(api, session, name, call_id, arguments):
    return await api.post(
        f"/tools/{name}",
        {"call_id": call_id, "arguments": arguments},
        content_type="application/json",
        headers=bearer(session),
    )


async def hold(session, count, *, status=RUNNING, prefix="held"):
    """count calls of session, as a worker would hold them."""
    for n in range(count):
        await ToolExecution.objects.acreate(
            session=session,
            call_id=f"{prefix}_{n}",
            tool="bash",
            arguments={"command": "sleep 200"},
            status=status,
        )


def function_call(call_id, name, arguments):
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


# --- calls in flight ---------------------------------------------------------------------
async def test_a_session_holding_its_share_of_the_workers_is_refused_429_with_retry_after(
    api, make_live_session
):
    session = await make_live_session()
    await hold(session, 2)
    await hold(session, 1, status=QUEUED, prefix="waiting")

    refused = await call(api, session, "read_file", "call_r", {"file_path": "a.txt"})

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_running"
    assert "3 tool calls queued or running" in refused.json()["error"]["message"]
    assert int(refused["Retry-After"]) > 0
    assert not await ToolExecution.objects.filter(call_id="call_r").aexists()


async def test_finished_calls_do_not_count_against_the_share(api, make_live_session):
    session = await make_live_session()
    await hold(session, 5, status=ToolExecution.Status.SUCCEEDED)
    await hold(session, 2, prefix="running")

    ran = await call(api, session, "read_file", "call_r", {"file_path": "a.txt"})

    assert ran.status_code == 200


async def test_a_callers_sessions_together_hold_at_most_the_callers_share(
    api, make_live_session, make_api_key, settings
):
    settings.TOOLS_MAX_RUNNING_PER_SESSION = 3
    settings.TOOLS_MAX_RUNNING_PER_CALLER = 4
    key = await make_api_key()
    first = await make_live_session(api_key=key)
    second = await make_live_session(api_key=key)
    stranger = await make_live_session()
    await hold(first, 2)
    await hold(second, 2)
    await hold(stranger, 2)

    refused = await call(api, second, "read_file", "call_r", {"file_path": "a.txt"})
    others = await call(api, stranger, "read_file", "call_s", {"file_path": "a.txt"})

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_running"
    assert "caller's sessions" in refused.json()["error"]["message"]
    assert others.status_code == 200


async def test_an_anonymous_caller_is_counted_by_its_address(api, make_live_session, settings):
    settings.TOOLS_MAX_RUNNING_PER_CALLER = 2
    first = await make_live_session(client_network="203.0.113.7")
    second = await make_live_session(client_network="203.0.113.7")
    await hold(first, 2)

    refused = await call(api, second, "read_file", "call_r", {"file_path": "a.txt"})

    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_running"


async def test_a_repeat_of_a_call_in_flight_is_not_refused(api, make_live_session, settings):
    settings.TOOL_TIMEOUT_SECONDS = 1
    session = await make_live_session()
    await hold(session, 3)

    again = await call(api, session, "bash", "held_0", {"command": "sleep 200"})

    # Not refused: still running past its wait, it goes on in the background.
    assert again.status_code == 202 and again.json()["status"] == "running"
    assert await ToolExecution.objects.acount() == 3


async def test_the_model_hears_a_clear_failure_when_its_session_holds_its_share(
    make_live_session,
):
    session = await make_live_session()
    await hold(session, 3)

    heard = await actions.answer_for_model(
        session.pk, function_call("call_m", "read_file", json.dumps({"file_path": "a.txt"}))
    )

    assert heard.startswith("Error: This session already has 3 tool calls queued or running")
    assert not await ToolExecution.objects.filter(call_id="call_m").aexists()


# --- what calls send ---------------------------------------------------------------------
async def test_arguments_over_the_per_call_cap_are_413_and_write_file_still_fits_128_kib(
    api, make_live_session
):
    session = await make_live_session()
    fits = "x" * (128 * 1024 - 100)
    too_much = "x" * (128 * 1024 + 1)

    written = await call(
        api, session, "write_file", "call_1", {"file_path": "a.txt", "content": fits}
    )
    refused = await call(
        api, session, "write_file", "call_2", {"file_path": "b.txt", "content": too_much}
    )

    assert written.status_code == 200 and written.json()["status"] == "succeeded"
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "arguments_too_large"
    assert not await ToolExecution.objects.filter(call_id="call_2").aexists()


async def test_the_model_hears_why_arguments_too_large_were_not_run(make_live_session, settings):
    settings.TOOL_ARGUMENTS_MAX_BYTES = 1000
    session = await make_live_session()
    arguments = json.dumps({"file_path": "a.txt", "content": "y" * 2000})

    heard = await actions.answer_for_model(
        session.pk, function_call("call_m", "write_file", arguments)
    )

    assert heard.startswith("Error: The arguments are") and "at most 1000" in heard
    assert await ToolExecution.objects.acount() == 0


async def test_a_session_may_send_only_so_much_in_arguments_in_all(
    api, make_live_session, settings
):
    settings.TOOL_ARGUMENTS_MAX_BYTES_PER_SESSION = 1000
    session = await make_live_session()
    first = {"file_path": "a.txt", "content": "z" * 600}
    second = {"file_path": "b.txt", "content": "z" * 600}

    written = await call(api, session, "write_file", "call_1", first)
    refused = await call(api, session, "write_file", "call_2", second)
    repeated = await call(api, session, "write_file", "call_1", first)
    small = await call(api, session, "read_file", "call_3", {"file_path": "a.txt"})

    assert written.status_code == 200
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "tool_arguments_full"
    assert repeated.status_code == 200 and repeated.json() == written.json()
    assert small.status_code == 200
    execution = await ToolExecution.objects.aget(call_id="call_1")
    assert execution.arguments_bytes == len(json.dumps(first, separators=(",", ":")))
