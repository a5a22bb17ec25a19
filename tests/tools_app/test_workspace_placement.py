"""Where a session's calls run (tools_app.placement), one process playing the workers:
the claim of a session's workspace, the forwarding of a call to the worker holding it,
the reset told once when that worker is gone, and the sweep's part."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from django_redis import get_redis_connection

from tools_app import placement, policy
from tools_app.models import ToolExecution
from tools_app.tasks import (
    execute_tool_task,
    fail_lost_executions_task,
    remove_expired_workspaces_task,
)
from tools_app.worker import WORKER_LOST
from voiceplatform.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA = "alpha@pod-a"
BETA = "beta@pod-b"


@pytest.fixture
def brokered(settings):
    """Tasks go to Redis (no worker takes them here), as between real workers."""
    celery_app.conf.task_always_eager = False
    settings.CELERY_TASK_ALWAYS_EAGER = False
    yield
    celery_app.conf.task_always_eager = True


@pytest.fixture
def homes():
    """Two workers' homes, each with a live lease; the queues and keys go with the test."""
    made = {node: f"{node}.{time.time_ns():x}" for node in (ALPHA, BETA)}
    for node, home in made.items():
        placement.write_lease(node, home, placement.LIVE, time.time() - 600)
    yield made
    client = get_redis_connection("default")
    for node, home in made.items():
        client.delete(placement._lease_prefix() + node)
        for tool in ("bash", "read_file"):
            client.delete(placement.queue_of(home, tool).name)


@pytest.fixture
def as_worker(monkeypatch):
    """This process is the worker holding the given home (its pool process, to be exact)."""

    def become(home: str) -> None:
        monkeypatch.setattr(placement, "_home", home)

    return become


@pytest.fixture
async def session(make_session):
    return await make_session(
        status="active", tools=policy.definitions(["bash", "read_file", "write_file"])
    )


def _execution(session, call_id: str, tool: str = "bash", **fields) -> ToolExecution:
    arguments = {"command": "echo ok"} if tool == "bash" else {"file_path": "notes.txt"}
    return ToolExecution.objects.create(
        session=session, call_id=call_id, tool=tool, arguments=arguments, **fields
    )


def _queued_ids(queue: str) -> list[int]:
    """The execution ids of the tool calls waiting in a Celery queue on Redis."""
    messages = get_redis_connection("default").lrange(queue, 0, -1)
    return [int(json.loads(raw)["headers"]["argsrepr"].strip("(),")) for raw in messages]


def _lapse(node: str) -> None:
    get_redis_connection("default").delete(placement._lease_prefix() + node)


def test_workers_racing_on_a_sessions_first_calls_agree_on_one_workspace(homes):
    for attempt in range(20):
        workspace = f"sess_race_{time.time_ns()}_{attempt}"
        start = threading.Barrier(2)
        found: dict[str, tuple[str, str]] = {}

        def ask(node: str, workspace=workspace, start=start, found=found) -> None:
            start.wait()
            found[node] = placement.claim(workspace, homes[node])

        threads = [threading.Thread(target=ask, args=(node,)) for node in homes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        (alpha_home, alpha_how), (beta_home, beta_how) = found[ALPHA], found[BETA]
        assert alpha_home == beta_home  # one workspace, wherever the calls were taken
        assert sorted([alpha_how, beta_how]) == ["kept", "new"]


async def test_a_call_taken_by_a_worker_not_holding_its_workspace_goes_to_the_holder(
    brokered, homes, as_worker, session
):
    assert placement.claim(session.pk, homes[ALPHA]) == (homes[ALPHA], "new")
    execution = await sync_to_async(_execution)(session, "call_fwd")
    as_worker(homes[BETA])

    await sync_to_async(execute_tool_task.apply)((execution.pk,))

    execution = await ToolExecution.objects.aget(pk=execution.pk)
    assert execution.status == ToolExecution.Status.QUEUED and execution.worker == ""
    assert _queued_ids(placement.queue_of(homes[ALPHA], "bash").name) == [execution.pk]


async def test_the_web_queues_a_sessions_calls_to_the_worker_holding_its_workspace(
    brokered, homes, session
):
    execution = await sync_to_async(_execution)(session, "call_route", tool="read_file")
    before = await sync_to_async(placement.queue_for)(execution)
    placement.claim(session.pk, homes[ALPHA])

    held = await sync_to_async(placement.queue_for)(execution)
    _lapse(ALPHA)
    gone = await sync_to_async(placement.queue_for)(execution)

    assert before == gone == "celery.tools-fast"  # shared: whoever takes it claims it
    assert held.name == f"celery.tools-fast.{ALPHA}"  # quick calls apart there too


async def test_a_call_after_its_workspace_worker_died_runs_here_and_says_once_it_was_reset(
    brokered, homes, as_worker, session
):
    placement.claim(session.pk, homes[ALPHA])
    _lapse(ALPHA)
    as_worker(homes[BETA])
    first = await sync_to_async(_execution)(session, "call_after")
    second = await sync_to_async(_execution)(session, "call_again")

    await sync_to_async(execute_tool_task.apply)((first.pk,))
    await sync_to_async(execute_tool_task.apply)((second.pk,))

    first = await ToolExecution.objects.aget(pk=first.pk)
    second = await ToolExecution.objects.aget(pk=second.pk)
    assert first.status == second.status == ToolExecution.Status.SUCCEEDED
    assert first.output == placement.RESET_NOTICE + "ok\n"
    assert second.output == "ok\n"
    assert placement.claim(session.pk, homes[ALPHA]) == (homes[BETA], "kept")


async def test_a_sessions_first_call_on_a_fresh_worker_says_nothing_of_a_reset(
    brokered, homes, as_worker, session
):
    as_worker(homes[BETA])
    execution = await sync_to_async(_execution)(session, "call_first")

    await sync_to_async(execute_tool_task.apply)((execution.pk,))

    execution = await ToolExecution.objects.aget(pk=execution.pk)
    assert execution.output == "ok\n"


async def test_the_sweep_fails_at_once_a_call_whose_worker_lease_lapsed(brokered, homes, session):
    started = timezone.now() - timedelta(seconds=120)
    held = dict(status=ToolExecution.Status.RUNNING, started_at=started)
    on_live = await sync_to_async(_execution)(session, "call_l", worker=f"{BETA}:7", **held)
    on_dead = await sync_to_async(_execution)(session, "call_d", worker=f"{ALPHA}:7", **held)
    _lapse(ALPHA)

    await sync_to_async(fail_lost_executions_task)()

    on_live = await ToolExecution.objects.aget(pk=on_live.pk)
    on_dead = await ToolExecution.objects.aget(pk=on_dead.pk)
    assert on_live.status == ToolExecution.Status.RUNNING
    assert on_dead.status == ToolExecution.Status.FAILED and on_dead.error == WORKER_LOST


async def test_the_sweep_fails_a_call_of_a_worker_that_started_again_under_its_name(
    brokered, homes, session
):
    started = timezone.now() - timedelta(seconds=120)
    execution = await sync_to_async(_execution)(
        session, "call_r", worker=f"{ALPHA}:7", status="running", started_at=started
    )
    placement.write_lease(ALPHA, f"{ALPHA}.restarted", placement.LIVE, time.time())

    await sync_to_async(fail_lost_executions_task)()

    execution = await ToolExecution.objects.aget(pk=execution.pk)
    assert execution.status == ToolExecution.Status.FAILED and execution.error == WORKER_LOST


async def test_a_call_stranded_on_a_dead_workers_queue_is_queued_again_for_any_worker(
    brokered, homes, session
):
    placement.claim(session.pk, homes[ALPHA])
    _lapse(ALPHA)
    stranded = await sync_to_async(_execution)(session, "call_s")
    await ToolExecution.objects.filter(pk=stranded.pk).aupdate(
        created_at=timezone.now() - timedelta(seconds=120)
    )
    shared = get_redis_connection("default")
    shared.delete("celery.tools-slow")

    await sync_to_async(fail_lost_executions_task)()

    assert _queued_ids("celery.tools-slow") == [stranded.pk]
    shared.delete("celery.tools-slow")


async def test_old_workspaces_are_removed_by_every_live_worker_on_its_own(brokered, homes):
    _lapse(BETA)  # gone, its workspaces with it

    await sync_to_async(remove_expired_workspaces_task)()

    client = get_redis_connection("default")
    alpha = client.lrange(placement.queue_of(homes[ALPHA], "read_file").name, 0, -1)
    beta = client.lrange(placement.queue_of(homes[BETA], "read_file").name, 0, -1)
    tasks = [json.loads(raw)["headers"]["task"] for raw in alpha]
    assert tasks == ["tools_app.tasks.remove_own_workspaces_task"] and beta == []
