"""Two real Celery workers, each with its own workspace root (pod-local, as in
Kubernetes): a session's calls all reach the worker holding its workspace, and when that
worker is killed the session goes on elsewhere, told once that its workspace was reset."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django_redis import get_redis_connection

from tests.support import eventually, start_worker, wait_for_worker
from tools_app import actions, placement, policy
from tools_app.calls import ToolCall
from tools_app.models import ToolExecution
from tools_app.tasks import fail_lost_executions_task
from tools_app.worker import WORKER_LOST
from voiceplatform.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = ["bash", "read_file", "write_file"]


class Pod:
    """A worker process and its own var directory (workspaces, heartbeat)."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self.var = tmp_path / name
        self.var.mkdir()
        self.var.chmod(0o711)
        self.process = start_worker(
            name,
            tmp_path / f"{name}.log",
            fast_redelivery=True,
            env={"VAR_DIR": str(self.var), "TOOL_WORKER_LEASE_SECONDS": "2"},
        )

    def workspace(self, session_id: str) -> Path:
        return self.var / "test-workspaces" / session_id

    def stop(self) -> None:
        """Its warm shutdown (what a test kills stays dead)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """kill -9 of the worker and its pool: no goodbye."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def pods(settings, tmp_path):
    # bash runs as a sandbox uid that must pass through to its workspace (as through the
    # directories Workspace.make_root makes); pytest makes its directories 0700.
    for directory in (tmp_path, *tmp_path.parents):
        if directory.stat().st_mode & 0o011 != 0o011:
            directory.chmod(directory.stat().st_mode | 0o011)
    celery_app.conf.task_always_eager = False
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.TOOL_WORKER_LEASE_SECONDS = 2  # as the workers have it: the sweep's view
    _purge()
    started = {name: Pod(name, tmp_path) for name in ("pod-a", "pod-b")}
    for name in started:
        wait_for_worker(name)
    yield started
    for pod in started.values():
        pod.stop()
    _purge()
    celery_app.conf.task_always_eager = True


def _purge() -> None:
    """The shared queues and the pods' own (a call queued for a killed pod stays there)."""
    celery_app.control.purge()
    own = [
        f"{shared}.{pod}@{socket.gethostname()}"
        for shared in (settings.TOOL_QUEUE_FAST, settings.TOOL_QUEUE_SLOW)
        for pod in ("pod-a", "pod-b")
    ]
    get_redis_connection("default").delete(*own)


async def call(session, call_id: str, tool: str, **arguments) -> ToolExecution:
    """One tool call, submitted as the client does, waited for until it ends."""
    execution, _ = await actions.submit(
        ToolCall(session, tool, call_id, arguments), origin=ToolExecution.Origin.CLIENT
    )
    await actions.wait_for(execution, timeout=60)
    return await ToolExecution.objects.aget(pk=execution.pk)  # worker included


def ran_on(execution: ToolExecution) -> str:
    return execution.worker.partition("@")[0]


async def test_a_sessions_calls_see_its_files_whichever_worker_took_them(pods, make_session):
    first = await make_session(status="active", tools=policy.definitions(TOOLS))
    second = await make_session(status="active", tools=policy.definitions(TOOLS))
    await call(first, "call_1_w0", "write_file", file_path="r0.txt", content="first-0")
    # While the first session's worker is busy (one pool process, prefetching nothing
    # more), the second session's first call can only be taken by the other worker.
    busy, _ = await actions.submit(
        ToolCall(first, "bash", "call_1_busy", {"command": "sleep 2"}), origin="client"
    )

    async def running():
        return (await ToolExecution.objects.aget(pk=busy.pk)).status == "running"

    assert await eventually(running, timeout=30)
    await call(second, "call_2_w0", "write_file", file_path="r0.txt", content="second-0")

    for number in range(1, 4):
        for session, label in ((first, "first"), (second, "second")):
            prefix = f"call_{label}_{number}"
            wrote = await call(
                session,
                f"{prefix}_w",
                "write_file",
                file_path=f"r{number}.txt",
                content=f"{label}-{number}",
            )
            read = await call(session, f"{prefix}_r", "read_file", file_path=f"r{number}.txt")
            listed = await call(session, f"{prefix}_b", "bash", command="cat r*.txt")

            assert wrote.status == read.status == listed.status == "succeeded", (
                wrote.output,
                read.output,
                listed.output,
            )
            assert read.output.endswith(f"{label}-{number}")
            assert listed.output == "".join(f"{label}-{n}" for n in range(number + 1))

    workers = {
        session.pk: {
            ran_on(execution) async for execution in ToolExecution.objects.filter(session=session)
        }
        for session in (first, second)
    }
    assert len(workers[first.pk]) == len(workers[second.pk]) == 1  # one workspace each
    assert workers[first.pk] | workers[second.pk] == {"pod-a", "pod-b"}  # both were used


async def test_a_worker_killed_mid_call_ends_that_call_once_and_the_next_is_told_of_the_reset(
    pods, make_session
):
    session = await make_session(status="active", tools=policy.definitions(TOOLS))
    wrote = await call(session, "call_w", "write_file", file_path="notes.txt", content="kept?")
    holder = pods[ran_on(wrote)]
    other = next(pod for pod in pods.values() if pod is not holder)
    victim, _ = await actions.submit(
        ToolCall(session, "bash", "call_v", {"command": "echo start >> runs.txt; sleep 30"}),
        origin="client",
    )

    async def running():
        return (await ToolExecution.objects.aget(pk=victim.pk)).status == "running"

    assert await eventually(running, timeout=30)
    await sync_to_async(_started, thread_sensitive=False)(holder.workspace(session.pk))
    holder.kill()

    # The sweep, as beat runs it every minute: the call ends once its worker's lease lapsed.
    async def ended():
        await sync_to_async(fail_lost_executions_task)()
        return (await ToolExecution.objects.aget(pk=victim.pk)).is_finished

    assert await eventually(ended, timeout=30)
    after = await call(session, "call_after", "bash", command="ls; echo after")
    third = await call(session, "call_third", "bash", command="echo third")

    victim = await ToolExecution.objects.aget(pk=victim.pk)
    assert victim.status == "failed" and victim.error == WORKER_LOST
    assert ran_on(victim) == holder.name
    assert (holder.workspace(session.pk) / "runs.txt").read_text() == "start\n"  # ran once
    assert not (other.workspace(session.pk) / "runs.txt").exists()
    assert after.status == "succeeded" and ran_on(after) == other.name
    assert after.output == placement.RESET_NOTICE + "after\n"  # notes.txt is gone
    assert third.status == "succeeded" and third.output == "third\n"  # said once
    assert ran_on(third) == other.name


def _started(workspace: Path) -> None:
    """Until the victim's command has written its first line."""
    subprocess.run(
        ["timeout", "30", "sh", "-c", f"until [ -s '{workspace}/runs.txt' ]; do sleep 0.1; done"],
        check=True,
    )
