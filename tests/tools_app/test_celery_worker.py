"""With a real Celery worker process on Redis: calls run there, once, and a worker
killed mid-tool leaves no call lost, stuck or run twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from asgiref.sync import sync_to_async

from tests.factories import bearer
from tests.support import eventually, start_worker, wait_for_worker
from tools_app import actions, policy
from tools_app.calls import ToolCall
from tools_app.models import ToolExecution
from tools_app.worker import WORKER_LOST
from tools_app.workspace import Workspace

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker(real_celery, tmp_path):
    process = start_worker("w1", tmp_path / "w1.log", fast_redelivery=True)
    wait_for_worker("w1")
    yield process
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
async def session(make_session):
    """A live session allowed bash."""
    return await make_session(status="active", tools=policy.definitions(["bash"]))


async def test_a_real_worker_runs_the_call_and_returns_it_without_blocking(api, worker, session):
    response = await api.post(
        "/tools/bash",
        {"call_id": "call_1", "arguments": {"command": "echo from-worker"}},
        content_type="application/json",
        headers=bearer(session),
    )

    assert response.status_code == 200
    assert response.json()["output"] == "from-worker\n"
    execution = await ToolExecution.objects.aget(call_id="call_1")
    assert execution.worker.startswith("w1@")


def _pool_child(worker: subprocess.Popen) -> int:
    children = subprocess.run(
        ["pgrep", "-P", str(worker.pid)], capture_output=True, text=True
    ).stdout.split()
    return int(children[0])


async def test_a_worker_child_killed_mid_tool_leaves_the_call_failed_not_rerun(worker, session):
    workspace = Workspace.for_session(session.pk)
    command = "echo start >> runs.txt; sleep 3; echo end >> runs.txt"
    execution, _ = await actions.submit(
        ToolCall(session, "bash", "call_k", {"command": command}), origin="client"
    )

    async def running():
        return (await ToolExecution.objects.aget(pk=execution.pk)).status == "running"

    assert await eventually(running, timeout=20)
    await sync_to_async(time.sleep)(0.5)
    os.kill(_pool_child(worker), signal.SIGKILL)
    finished = await actions.wait_for(execution, timeout=30)
    await sync_to_async(time.sleep)(3.5)  # past the moment the command would have ended

    assert finished.status == "failed"
    assert finished.error == WORKER_LOST
    assert (workspace.root / "runs.txt").read_text() == "start\n"  # ran once, stopped


async def test_a_whole_worker_killed_mid_tool_is_picked_up_by_the_next_one(
    real_celery, tmp_path, session
):
    first = start_worker("w2", tmp_path / "w2.log", fast_redelivery=True)
    await sync_to_async(wait_for_worker)("w2")
    execution, _ = await actions.submit(
        ToolCall(session, "bash", "call_w", {"command": "sleep 30"}), origin="client"
    )

    async def running():
        return (await ToolExecution.objects.aget(pk=execution.pk)).status == "running"

    assert await eventually(running, timeout=20)
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its children, no goodbye
    first.wait()
    second = start_worker("w3", tmp_path / "w3.log", fast_redelivery=True)
    try:
        finished = await actions.wait_for(execution, timeout=45)
    finally:
        os.killpg(second.pid, signal.SIGKILL)
        second.wait()

    assert finished.status == "failed" and finished.error == WORKER_LOST
    assert finished.worker.startswith("w2@")  # claimed by the worker that died


async def test_a_quick_call_does_not_wait_behind_slow_calls_queued_before_it(worker, make_session):
    # One pool process: while it runs a slow call, two more wait in the queue.
    busy = await make_session(status="active", tools=policy.definitions(["bash"]))
    other = await make_session(status="active", tools=policy.definitions(["read_file"]))
    slow = []
    for n in range(3):
        call = ToolCall(busy, "bash", f"call_slow_{n}", {"command": "sleep 2"})
        slow.append((await actions.submit(call, origin="client"))[0])

    async def first_running():
        return (await ToolExecution.objects.aget(pk=slow[0].pk)).status == "running"

    assert await eventually(first_running, timeout=20)
    quick, _ = await actions.submit(
        ToolCall(other, "read_file", "call_quick", {"file_path": "notes.txt"}), origin="client"
    )
    quick = await actions.wait_for(quick, timeout=30)
    slow = [await actions.wait_for(execution, timeout=30) for execution in slow]

    assert quick.is_finished and all(execution.is_finished for execution in slow)
    # It ran as soon as the first slow call let go, before the ones queued earlier (which
    # of those comes first is not promised: the session's later calls may wait in its
    # worker's own queue, tools_app.placement).
    assert slow[0].finished_at <= quick.started_at < min(slow[1].started_at, slow[2].started_at)


async def test_with_no_worker_alive_sessions_start_without_tools(api, real_celery, simulator):
    from ops_app import health

    assert not (await health.check("workers")).ok  # what the background probe finds

    response = await api.post("/session", content_type="application/json")

    assert response.json()["degradation_level"] == 2 and response.json()["tools"] == []


async def test_a_live_worker_is_found_by_the_probe(worker):
    from ops_app import health

    assert (await health.check("workers")).ok


@pytest.fixture
def pooled_worker(real_celery, tmp_path):
    """A worker with the production settings: its own connection pool."""
    process = start_worker(
        "pooled",
        tmp_path / "pooled.log",
        settings_module="voiceplatform.settings",
        env={"VAR_DIR": str(tmp_path / "var"), "TOOL_WORKSPACE_ROOT": str(tmp_path / "ws")},
    )
    wait_for_worker("pooled")
    yield process
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


async def test_a_worker_keeps_its_pooled_connections_from_one_call_to_the_next(
    pooled_worker, make_session
):
    session = await make_session(status="active", tools=policy.definitions(["glob"]))
    from django.db import connection
    from django.utils import timezone

    def backends_started_since(moment) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_start > %s",
                [moment],
            )
            return cursor.fetchone()[0]

    async def run(number: int) -> None:
        call = ToolCall(session, "glob", f"call_keep_{number}", {"pattern": "*"})
        execution = await actions._run(call, ToolExecution.Origin.CLIENT)
        assert execution.status == ToolExecution.Status.SUCCEEDED, execution.output

    await run(0)  # the worker's pool opens its connection
    warmed = timezone.now()
    for number in range(1, 6):
        await run(number)

    # Five calls, and no new connection: each borrowed the pool's (Celery used to close
    # the pool around every task, so each call opened new ones).
    assert await sync_to_async(backends_started_since)(warmed) == 0
