"""POST /tools/<name>: policy, validation, exactly-once, degradation, both doors."""

from __future__ import annotations

import asyncio
import json
from functools import partial

import pytest
from asgiref.sync import sync_to_async

from ops_app import breakers
from sessions_app.models import VoiceSession
from tests.factories import bearer
from tools_app import policy
from tools_app.models import ToolExecution

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def make_live_session(make_session):
    """``await make_live_session(**fields)``: an active session allowed the tools these
    tests use, unless fields say otherwise."""
    tools = policy.definitions(["bash", "read_file", "write_file", "web_search", "web_fetch"])
    return partial(make_session, status="active", tools=tools)


async def call(api, session, name, call_id="call_1", arguments=None, **body):
    payload = {"call_id": call_id, "arguments": arguments if arguments is not None else {}}
    return await api.post(
        f"/tools/{name}", payload | body, content_type="application/json", headers=bearer(session)
    )


async def test_it_runs_a_tool_and_returns_its_result(api, make_live_session):
    session = await make_live_session()

    written = await call(
        api, session, "write_file", "call_w", {"file_path": "a.txt", "content": "hello"}
    )
    ran = await call(api, session, "bash", "call_b", {"command": "cat a.txt"})

    assert written.status_code == ran.status_code == 200
    assert ran.json() == {
        "call_id": "call_b",
        "tool": "bash",
        "status": "succeeded",
        "output": "hello",
        "error": None,
    }
    execution = await ToolExecution.objects.aget(call_id="call_b")
    assert execution.worker and execution.duration_seconds is not None
    assert execution.origin == "client"


async def test_a_tools_own_failure_is_status_failed_with_a_clear_error(api, make_live_session):
    session = await make_live_session()

    missing = await call(api, session, "read_file", "c1", {"file_path": "nope.txt"})
    escape = await call(api, session, "read_file", "c2", {"file_path": "../../etc/passwd"})
    exit_code = await call(api, session, "bash", "c3", {"command": "exit 4"})

    assert [r.status_code for r in (missing, escape, exit_code)] == [200, 200, 200]
    assert missing.json()["status"] == "failed" and "No such file" in missing.json()["error"]
    assert "leaves the workspace" in escape.json()["error"]
    assert "code 4" in exit_code.json()["error"]


async def test_it_runs_a_call_once_however_often_it_is_posted(api, make_live_session):
    session = await make_live_session()
    command = {"command": "echo run >> runs.txt; wc -l < runs.txt"}

    results = await asyncio.gather(
        *[call(api, session, "bash", "call_same", command) for _ in range(3)]
    )
    again = await call(api, session, "bash", "call_same", command)

    assert {r.json()["output"].strip() for r in [*results, again]} == {"1"}
    assert await ToolExecution.objects.acount() == 1


async def test_a_call_id_reused_for_different_arguments_is_a_conflict(api, make_live_session):
    session = await make_live_session()
    await call(api, session, "bash", "call_x", {"command": "true"})

    response = await call(api, session, "bash", "call_x", {"command": "false"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "call_id_reused"


async def test_a_tool_outside_the_sessions_policy_is_403_and_unknown_is_404(api, make_live_session):
    session = await make_live_session(tools=policy.definitions(["read_file"]))

    forbidden = await call(api, session, "bash", arguments={"command": "id"})
    unknown = await call(api, session, "teleport")

    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "tool_not_allowed"
    assert unknown.status_code == 404
    assert await ToolExecution.objects.acount() == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"call_id": "c", "arguments": {"command": 42}}, 400, "invalid_arguments"),
        ({"call_id": "c", "arguments": {}}, 400, "invalid_arguments"),
        ({"call_id": "c", "arguments": {"command": "ls", "sudo": True}}, 400, "invalid_arguments"),
        (
            {"call_id": "c", "arguments": {"command": "ls", "timeout": 9999}},
            400,
            "invalid_arguments",
        ),
        ({"call_id": "c", "arguments": {"command": "x" * 20_000}}, 400, "invalid_arguments"),
        ({"call_id": "c", "arguments": "ls"}, 400, "invalid_arguments"),
        ({"call_id": "", "arguments": {}}, 400, "invalid_call_id"),
        ({"call_id": 7, "arguments": {}}, 400, "invalid_call_id"),
        ({"arguments": {}}, 400, "missing_field"),
        ({"call_id": "c", "arguments": {}, "name": "bash"}, 400, "unknown_field"),
        ({"call_id": "c", "arguments": {"command": "x" * 300_000}}, 413, "payload_too_large"),
    ],
)
async def test_it_rejects_bad_arguments_with_a_clear_message(
    api, body, status, code, make_live_session
):
    session = await make_live_session()

    response = await api.post(
        "/tools/bash", body, content_type="application/json", headers=bearer(session)
    )

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert await ToolExecution.objects.acount() == 0


async def test_the_schema_message_names_the_bad_field(api, make_live_session):
    session = await make_live_session()

    response = await call(api, session, "bash", arguments={"command": 42})

    assert response.json()["error"]["message"].startswith("Invalid arguments for bash: command:")


async def test_it_needs_a_live_session_token(api, make_live_session):
    session = await make_live_session(status="ended")

    no_token = await api.post(
        "/tools/bash", {"call_id": "c", "arguments": {}}, content_type="application/json"
    )
    ended = await call(api, session, "bash", arguments={"command": "id"})
    get = await api.get("/tools/bash", headers=bearer(session))

    assert (no_token.status_code, ended.status_code, get.status_code) == (401, 409, 405)


async def test_with_the_breaker_open_tools_answer_503_and_sessions_start_without_tools(
    api, simulator, settings, make_live_session
):
    session = await make_live_session()
    breaker = breakers.amplifier()
    for _ in range(settings.AMPLIFIER_BREAKER_FAILURES):
        await sync_to_async(breakers.record)(breaker, False)
    try:
        refused = await call(api, session, "bash", arguments={"command": "id"})
        created = await api.post("/session", content_type="application/json")
    finally:
        await sync_to_async(breakers.reset)(breaker)

    assert refused.status_code == 503 and refused["Retry-After"]
    assert refused.json()["error"]["message"] == (
        "I can't execute tasks right now, but I can still help with questions."
    )
    body = created.json()
    assert body["degradation_level"] == 2 and body["tools"] == []
    stored = await VoiceSession.objects.aget(pk=body["session_id"])
    assert "I can't execute tasks right now" in stored.instructions


async def test_a_tools_own_timeouts_and_exceptions_never_open_the_breaker(
    api, settings, monkeypatch, make_live_session
):
    from tools_app.builtin import BashTool

    session = await make_live_session()
    settings.TOOL_BASH_TIMEOUT_SECONDS = 1
    rounds = settings.AMPLIFIER_BREAKER_FAILURES + 1
    try:
        for index in range(rounds):
            await call(api, session, "bash", f"slow_{index}", {"command": "sleep 5"})

        async def crash(self, input):  # noqa: A002
            raise RuntimeError("a bug in the tool")

        with monkeypatch.context() as patched:
            patched.setattr(BashTool, "execute", crash)
            crashed = [
                await call(api, session, "bash", f"crash_{index}", {"command": "id"})
                for index in range(rounds)
            ]
        after = await call(api, session, "bash", "after", {"command": "echo still here"})
    finally:
        await sync_to_async(breakers.reset)(breakers.amplifier())

    assert crashed[0].status_code == 200
    assert crashed[0].json()["status"] == "failed"
    assert crashed[0].json()["error"] == "The tool failed unexpectedly (RuntimeError)."
    assert after.status_code == 200 and after.json()["output"] == "still here\n"


@pytest.mark.parametrize("url", ["http://[::1/", "http://x:99999/", "http://[64:ff9b::a9fe:a9fe]/"])
async def test_a_hostile_web_fetch_address_fails_the_call_not_everyones_tools(
    api, settings, url, make_live_session
):
    attacker, bystander = await make_live_session(), await make_live_session()
    try:
        answers = [
            await call(api, attacker, "web_fetch", f"evil_{index}", {"url": url})
            for index in range(settings.AMPLIFIER_BREAKER_FAILURES + 1)
        ]
        other = await call(api, bystander, "bash", "ok", {"command": "echo fine"})
        breaker_open = await sync_to_async(breakers.is_open)(breakers.amplifier())
    finally:
        await sync_to_async(breakers.reset)(breakers.amplifier())

    assert {answer.status_code for answer in answers} == {200}
    assert {answer.json()["status"] for answer in answers} == {"failed"}
    assert "address" in answers[0].json()["error"]
    assert not breaker_open
    assert other.status_code == 200 and other.json()["output"] == "fine\n"


async def test_lost_workers_still_open_the_breaker(settings, make_live_session):
    import socket
    import subprocess

    from tools_app import worker

    session = await make_live_session()
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        for index in range(settings.AMPLIFIER_BREAKER_FAILURES):
            execution = await ToolExecution.objects.acreate(
                session=session,
                call_id=f"lost_{index}",
                tool="bash",
                arguments={"command": "id"},
                status=ToolExecution.Status.RUNNING,
                worker=f"{socket.gethostname()}:{gone.pid}",
            )
            await sync_to_async(worker.run)(execution.pk)
        breaker_open = await sync_to_async(breakers.is_open)(breakers.amplifier())
    finally:
        await sync_to_async(breakers.reset)(breakers.amplifier())

    lost = await ToolExecution.objects.aget(call_id="lost_0")
    assert lost.status == "failed" and "stopped before it finished" in lost.error
    assert breaker_open


async def test_with_the_sideband_attached_only_calls_it_saw_are_accepted(api, make_live_session):
    session = await make_live_session(sideband_connected=True)
    await ToolExecution.objects.acreate(
        session=session,
        call_id="call_seen",
        tool="bash",
        arguments={"command": "id"},
        origin="sideband",
        status="succeeded",
        output="uid=1",
    )

    seen = await call(api, session, "bash", "call_seen", {"command": "id"})
    unseen = await call(api, session, "bash", "call_made_up", {"command": "id"})
    altered = await call(api, session, "bash", "call_seen", {"command": "rm -rf ."})

    assert seen.status_code == 200 and seen.json()["output"] == "uid=1"
    assert unseen.status_code == altered.status_code == 409
    assert unseen.json()["error"]["code"] == "unknown_call"


async def test_web_search_without_a_provider_says_so(api, settings, make_live_session):
    settings.WEB_SEARCH_URL = ""
    session = await make_live_session()

    response = await call(api, session, "web_search", arguments={"query": "django"})

    assert response.json()["status"] == "failed"
    assert response.json()["error"] == "Web search is not configured on this server."


async def test_web_search_asks_the_configured_provider(
    api, settings, search_provider, make_live_session
):
    settings.WEB_SEARCH_URL = search_provider
    session = await make_live_session()

    response = await call(api, session, "web_search", arguments={"query": "channels layers"})

    assert response.json()["status"] == "succeeded"
    assert response.json()["output"].startswith("1. Result for channels layers\n")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://localhost/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "file:///etc/passwd",
        "http://10.0.0.1/",
    ],
)
async def test_web_fetch_refuses_private_and_local_addresses(api, url, make_live_session):
    session = await make_live_session()

    response = await call(api, session, "web_fetch", arguments={"url": url})

    assert response.json()["status"] == "failed"
    assert "refused" in response.json()["error"] or "Only http" in response.json()["error"]


async def test_web_fetch_may_reach_local_addresses_when_allowed(
    api, settings, search_provider, make_live_session
):
    settings.WEB_FETCH_ALLOW_PRIVATE = True
    session = await make_live_session()

    response = await call(
        api, session, "web_fetch", arguments={"url": search_provider + "?q=fetched"}
    )

    assert response.json()["status"] == "succeeded"
    assert json.loads(response.json()["output"])["results"][0]["title"] == "Result for fetched"


async def test_tool_runs_are_counted_at_metrics(api, make_live_session):
    from prometheus_client import REGISTRY

    def count() -> float:
        return (
            REGISTRY.get_sample_value(
                "voice_tool_execution_total", {"tool_name": "bash", "status": "succeeded"}
            )
            or 0.0
        )

    session = await make_live_session()
    before = count()
    await call(api, session, "bash", "m1", {"command": "true"})
    await call(api, session, "bash", "m1", {"command": "true"})  # the same call: once
    page = await api.get("/metrics")

    assert count() == before + 1
    assert (
        b'voice_tool_execution_duration_seconds_bucket{le="0.1",status="succeeded"'
        b',tool_name="bash"}' in page.content
    )


async def test_a_grant_replaces_the_default_tools_for_that_key_or_user(
    api, simulator, settings, make_api_key
):
    from django.contrib.auth.models import User

    from tools_app.models import ToolGrant

    settings.TOOLS_FOR_USERS = []
    key = await make_api_key()
    user = await User.objects.acreate_user("granted", password="x")
    await ToolGrant.objects.acreate(api_key=key, tools=["read_file"])
    await ToolGrant.objects.acreate(user=user, tools=["*"])

    by_key = await api.post(
        "/session", content_type="application/json", headers={"Authorization": f"Bearer {key.raw}"}
    )
    await api.aforce_login(user)
    by_user = await api.post("/session", content_type="application/json")

    assert by_key.json()["tools"] == ["read_file"]
    assert "bash" in by_user.json()["tools"] and len(by_user.json()["tools"]) >= 8


def test_a_grant_must_name_known_tools_and_one_holder(django_user_model):
    from django.core.exceptions import ValidationError

    from tools_app.admin import ToolGrantForm
    from tools_app.models import ToolGrant

    user = django_user_model.objects.create(username="granted")
    unknown = ToolGrantForm(data={"tools": '["teleport"]', "user": user.pk})
    known = ToolGrantForm(data={"tools": '["bash"]', "user": user.pk})

    assert "Unknown tools: teleport." in unknown.errors["tools"][0]
    assert known.is_valid(), known.errors
    with pytest.raises(ValidationError):
        ToolGrant(tools=["bash"]).clean()  # neither a user nor a key


async def test_output_with_nul_bytes_is_stored_and_returned(api, make_live_session):
    session = await make_live_session()

    response = await call(api, session, "bash", "nul", {"command": "printf 'a\\0b'"})

    assert response.json()["output"] == "a\ufffdb"


async def test_secrets_in_a_tools_output_are_redacted_before_they_are_stored(
    api, make_live_session, settings
):
    settings.REDACT_SECRETS = True
    session = await make_live_session()
    command = {"command": "echo OPENAI_API_KEY=sk-proj-0123456789abcdefghijKLMN; echo done"}

    response = await call(api, session, "bash", "call_env", command)

    assert response.json()["output"] == "OPENAI_API_KEY=[redacted:api_key]\ndone\n"
    execution = await ToolExecution.objects.aget(call_id="call_env")
    assert "sk-proj" not in execution.output
    assert execution.arguments == command  # as called: a retried call must still match
