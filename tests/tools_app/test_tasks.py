"""Background tasks through the browser's door and the model's tools: a call that runs
long becomes a task (202), is read and cancelled by its session, and reports progress."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from django.utils import timezone

from ops_app.models import AuditEvent
from tests.factories import bearer
from tests.support import eventually
from tools_app import background, policy, sandbox
from tools_app.models import Task, ToolExecution
from tools_app.workspace import Workspace, sandbox_uid

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = ["bash", "write_file", "read_file", "task_status", "cancel_task"]


@pytest.fixture(autouse=True)
def _quick_detach(settings):
    settings.TASK_DETACH_AFTER_SECONDS = 0.5
    settings.TASK_CANCEL_GRACE_SECONDS = 1.0


@pytest.fixture
def make_live_session(make_session):
    return partial(make_session, status="active", tools=policy.definitions(TOOLS))


async def call(api, session, name, call_id, arguments, **body):
    payload = {"call_id": call_id, "arguments": arguments} | body
    return await api.post(
        f"/tools/{name}", payload, content_type="application/json", headers=bearer(session)
    )


async def task_of(api, session, task_id, suffix=""):
    return await api.get(f"/session/{session.pk}/tasks/{task_id}{suffix}", headers=bearer(session))


async def finished(api, session, task_id, timeout=20.0) -> dict:
    async def done():
        body = (await task_of(api, session, task_id)).json()
        return body if body["status"] != "running" else None

    return await eventually(done, timeout=timeout)


async def test_a_call_still_running_after_the_window_becomes_a_task_and_ends_readable(
    api, make_live_session
):
    session = await make_live_session()

    started = await call(api, session, "bash", "call_long", {"command": "sleep 2; echo done-42"})
    task_id = started.json()["task_id"]
    running = await task_of(api, session, task_id)
    ended = await finished(api, session, task_id)

    assert started.status_code == 202
    assert started.json() == {
        "call_id": "call_long",
        "tool": "bash",
        "status": "running",
        "task_id": task_id,
    }
    assert running.status_code == 200 and running.json()["status"] == "running"
    assert ended["status"] == "succeeded" and ended["output"].strip() == "done-42"
    assert ended["error"] is None and ended["finished_at"]


async def test_a_quick_call_is_answered_at_once_and_is_no_task(api, make_live_session):
    session = await make_live_session()

    ran = await call(api, session, "bash", "call_quick", {"command": "echo hi"})

    assert ran.status_code == 200 and ran.json()["output"] == "hi\n"
    assert not await Task.objects.aexists()


async def test_a_caller_may_ask_for_a_task_at_once_and_posting_again_gives_the_same(
    api, make_live_session
):
    session = await make_live_session()

    first = await call(api, session, "bash", "call_bg", {"command": "echo bg"}, detach=True)
    again = await call(api, session, "bash", "call_bg", {"command": "echo bg"}, detach=True)
    ended = await finished(api, session, first.json()["task_id"])

    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert ended["output"] == "bg\n"
    assert await ToolExecution.objects.acount() == 1 and await Task.objects.acount() == 1


async def test_cancelling_stops_every_process_of_the_sandbox_once_and_is_audited(
    api, make_live_session, settings
):
    session = await make_live_session()
    started = await call(
        api, session, "bash", "call_stop", {"command": "sleep 60 & sleep 60; echo never"}
    )
    task_id = started.json()["task_id"]

    wrong_method = await task_of(api, session, task_id, "/cancel")
    cancelled = await api.post(
        f"/session/{session.pk}/tasks/{task_id}/cancel", headers=bearer(session)
    )
    ended = await finished(api, session, task_id)
    again = await api.post(f"/session/{session.pk}/tasks/{task_id}/cancel", headers=bearer(session))

    assert wrong_method.status_code == 405
    assert cancelled.status_code == 202 and cancelled.json()["cancelled_by"] == "caller"
    assert ended["status"] == "cancelled" and "never" not in (ended["output"] or "")
    assert again.status_code == 409 and again.json()["error"]["code"] == "task_finished"
    uid = sandbox_uid(session.pk)
    if uid is not None:
        assert sandbox._pids_of(uid) == []  # nothing of the call is left running
    events = [e async for e in AuditEvent.objects.filter(action="task_cancelled")]
    assert [e.target for e in events] == [task_id]


async def test_a_task_reports_its_progress(api, make_live_session):
    session = await make_live_session()
    command = "for i in 1 2 3 4; do echo step-$i; sleep 0.6; done"

    started = await call(api, session, "bash", "call_progress", {"command": command})
    task_id = started.json()["task_id"]

    async def progressed():
        return (await task_of(api, session, task_id)).json()["progress"].startswith("step-")

    assert await eventually(progressed, timeout=10)
    assert (await finished(api, session, task_id))["status"] == "succeeded"


async def test_the_models_tools_tell_how_tasks_go_and_stop_one(api, make_live_session):
    session = await make_live_session()
    started = await call(api, session, "bash", "call_sleep", {"command": "echo working; sleep 30"})
    task_id = started.json()["task_id"]

    status = await call(api, session, "task_status", "call_status", {})
    stop = await call(api, session, "cancel_task", "call_cancel", {})
    ended = await finished(api, session, task_id)
    nothing = await call(api, session, "cancel_task", "call_cancel_2", {})

    assert status.json()["status"] == "succeeded"
    assert task_id in status.json()["output"] and "running" in status.json()["output"]
    assert stop.json()["status"] == "succeeded" and task_id in stop.json()["output"]
    assert ended["status"] == "cancelled" and ended["cancelled_by"] == "model"
    assert nothing.json()["status"] == "failed"


async def test_bad_task_requests_are_clear_json_errors(api, make_live_session):
    session = await make_live_session()
    other = await make_live_session()
    started = await call(api, session, "bash", "call_x", {"command": "sleep 1"}, detach=True)
    task_id = started.json()["task_id"]

    unknown = await task_of(api, session, "task_nope")
    foreign = await api.get(f"/session/{session.pk}/tasks/{task_id}", headers=bearer(other))
    others = await task_of(api, other, task_id)
    no_token = await api.get(f"/session/{session.pk}/tasks/{task_id}")
    bad_detach = await call(api, session, "bash", "call_y", {"command": "true"}, detach="yes")
    cancel_unknown = await api.post(
        f"/session/{session.pk}/tasks/task_nope/cancel", headers=bearer(session)
    )
    await finished(api, session, task_id)

    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_task"
    assert foreign.status_code == 403
    assert others.status_code == 404  # another session's task is unknown here
    assert no_token.status_code == 401
    assert bad_detach.status_code == 400
    assert cancel_unknown.status_code == 404


async def test_tasks_past_their_session_and_grace_are_stopped(api, make_live_session, settings):
    settings.TASK_GRACE_SECONDS = 0
    session = await make_live_session()
    started = await call(api, session, "bash", "call_orphan", {"command": "sleep 60"})
    session.ended_at = timezone.now()
    session.status = "ended"
    await session.asave(update_fields=["ended_at", "status"])

    stopped = await asyncio.to_thread(background.stop_overdue)
    ended = await finished(api, session, started.json()["task_id"])

    assert stopped == 1
    assert ended["status"] == "cancelled" and ended["cancelled_by"].startswith("system")


async def test_delegate_runs_an_agent_as_a_task_whose_steps_files_and_cost_are_kept(
    api, make_session, simulator
):
    session = await make_session(
        status="active", tools=policy.definitions(["delegate", "write_file", "read_file"])
    )
    instruction = "Create a file called plan.md with the first steps"

    started = await call(
        api, session, "delegate", "call_agent", {"agent": "coder", "instruction": instruction}
    )
    ended = await finished(api, session, started.json()["task_id"], timeout=30)
    steps = [s async for s in ToolExecution.objects.filter(task_id=started.json()["task_id"])]
    task = await Task.objects.aget(pk=started.json()["task_id"])
    await session.arefresh_from_db()

    assert started.status_code == 202  # an agent is a task from the start
    assert ended["status"] == "succeeded" and ended["kind"] == "agent"
    assert [s.tool for s in steps] == ["write_file"] and steps[0].origin == "agent"
    assert steps[0].status == "succeeded" and ended["steps"] == 1
    assert await asyncio.to_thread(
        lambda: (Workspace.for_session(session.pk).root / "plan.md").exists()
    )
    assert task.input_tokens > 0 and task.cost_usd > 0
    assert session.cost_usd >= task.cost_usd


async def test_a_task_run_in_process_goes_on_after_the_served_request_has_answered(
    http, make_session, simulator
):
    # Through the served app (its requests have their own thread-sensitive context,
    # which the test client's do not): the embedded default runs tasks in-process.
    session = await make_session(
        status="active", tools=policy.definitions(["delegate", "write_file"])
    )
    arguments = {"agent": "coder", "instruction": "Create a file called plan.md with steps"}

    started = await http.post(
        "/tools/delegate",
        json={"call_id": "call_agent", "arguments": arguments},
        headers=bearer(session),
    )

    async def done():
        execution = await ToolExecution.objects.aget(session=session, call_id="call_agent")
        return execution.is_finished and execution

    assert started.status_code == 202
    execution = await eventually(done, timeout=30)
    assert execution and execution.status == "succeeded", execution and execution.output


async def test_an_agent_is_cancelled_mid_step_and_runs_no_further(api, make_session, simulator):
    session = await make_session(
        status="active", tools=policy.definitions(["delegate", "bash", "write_file"])
    )
    started = await call(
        api,
        session,
        "delegate",
        "call_slow_agent",
        {"agent": "coder", "instruction": "Take your time, then run `touch done.txt`"},
    )
    task_id = started.json()["task_id"]

    async def stepping():
        return await ToolExecution.objects.filter(task_id=task_id).aexists()

    assert await eventually(stepping, timeout=20)
    cancelled = await api.post(
        f"/session/{session.pk}/tasks/{task_id}/cancel", headers=bearer(session)
    )
    ended = await finished(api, session, task_id, timeout=30)

    assert cancelled.status_code == 202
    assert ended["status"] == "cancelled"
    assert not await asyncio.to_thread(
        lambda: (Workspace.for_session(session.pk).root / "done.txt").exists()
    )


async def test_a_call_whose_worker_made_its_task_first_is_answered_with_that_task(
    make_live_session,
):
    session = await make_live_session()
    execution = await ToolExecution.objects.acreate(
        session=session, call_id="call_made", tool="bash", status="running"
    )
    made = await asyncio.to_thread(background.task_for_worker, execution)
    fresh = await ToolExecution.objects.aget(pk=execution.pk)

    task = await background.detach(fresh)

    assert task.pk == made.pk
    assert task.as_started() == {
        "call_id": "call_made",
        "tool": "bash",
        "status": "running",
        "task_id": made.pk,
    }
