"""Fault drills: a call's sideband outlives the process that held it. Two real servers
(A and B) share the test database, Redis and one simulator; a call is opened through A
and talks; then A is killed (SIGKILL), drained (`manage.py drain`) or stopped
(SIGTERM), and B takes the call's sideband over while the conversation goes on. At the
end the transcript holds every turn once and a tool call ran once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from websockets.asyncio.client import connect

from sessions_app import actions, leases, sideband
from sessions_app.models import ConversationItem, VoiceSession
from sessions_app.probe import ProbeCall, offering_peer, open_call
from tests.support import (
    ROOT,
    Simulator,
    daphne,
    database_env,
    eventually,
    free_port,
    held,
    start_server,
)
from tools_app.models import Task, ToolExecution

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = 3.0
# What the simulator's scripted user says on its own, and what it hears back.
SPOKEN_TURN = "Hello, what can you do?"
SPOKEN_REPLY = "I can talk with you, and run tools like bash and file access when they are enabled."


class Pod:
    """One server process: its URL, environment and process."""

    def __init__(self, name: str, env: dict[str, str], tmp_path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "POD_NAME": name, "PORT": str(self.port)}
        self.env["VAR_DIR"] = str(tmp_path / name / "var")
        self.log = tmp_path / f"{name}.log"
        self.process = start_server(daphne(self.port), self.port, self.env, self.log)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def pods(simulator_process, tmp_path):
    simulator_process.control("reset")
    env = {
        **database_env(connection.settings_dict),
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": simulator_process.url,
        "SIDEBAND_ENABLED": "1",
        "SIDEBAND_LEASE_SECONDS": str(LEASE_SECONDS),
        "SIDEBAND_HEARTBEAT_SECONDS": "0.5",
        "SIDEBAND_SWEEP_SECONDS": "0.5",
        "DRAIN_HANDOVER_SECONDS": "5",
        "TOOL_WORKSPACE_ROOT": str(tmp_path / "workspaces"),
        # bash's sandbox as the in-process tests run it (bubblewrap may not work here).
        "TOOL_ISOLATION": "rlimits",
        "TASK_DETACH_AFTER_SECONDS": "1",
    }
    started = []
    try:
        for name in ("pod-a", "pod-b"):
            started.append(Pod(name, env, tmp_path))
        yield started
    finally:
        for pod in started:
            pod.stop()


@pytest.fixture
def lease_store():
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


def holder_of(store: redis.Redis, session_id: str) -> str:
    value = store.get(leases.key(session_id))
    return value.decode() if value else ""


async def held_by(
    store: redis.Redis, upstream: Simulator, call: ProbeCall, pod: str, timeout: float
) -> float:
    """Seconds until pod holds the call's lease, the session says a sideband is on and
    the upstream has that connection (a killed holder's flag says "on" until then)."""
    started = time.monotonic()
    session_id = call.session["session_id"]

    async def check():
        if leases.pod_of(holder_of(store, session_id) or "x:0:0") != pod:
            return False
        if upstream.call(call.call_id)["sideband_connections"] != 1:
            return False
        return (await VoiceSession.objects.aget(pk=session_id)).sideband_connected

    assert await eventually(check, timeout=timeout), (
        f"{pod} did not take the call within {timeout} s (holder: "
        f"{holder_of(store, session_id) or 'nobody'})"
    )
    return time.monotonic() - started


async def talk(call: ProbeCall, text: str) -> str:
    """Says text on the data channel and returns the reply the user heard."""
    call.say(text)
    reply = await call.wait_for(
        lambda e: (
            e["type"] == "response.output_audio_transcript.done"
            and (text in e["transcript"] or e["transcript"].startswith("Here is what I found"))
        ),
        timeout=30,
        what=f"reply to {text!r}",
    )
    return reply["transcript"]


async def talk_reply(call: ProbeCall) -> str:
    """The model's answer after a tool's output, once it comes."""
    reply = await call.wait_for(
        lambda e: (
            e["type"] == "response.output_audio_transcript.done"
            and e["transcript"].startswith("Here is what I found")
        ),
        timeout=30,
        what="reply with the tool's output",
    )
    return reply["transcript"]


async def relay(http: httpx.AsyncClient, call: ProbeCall) -> list[dict]:
    """What the page does: posts the data channel's events to /session/<id>/events."""
    answers = []
    auth = {"Authorization": f"Bearer {call.session['session_token']}"}
    for start in range(0, len(call.events), 50):
        posted = await http.post(
            call.session["urls"]["events"],
            json={"events": call.events[start : start + 50]},
            headers=auth,
        )
        assert posted.status_code == 200, posted.text
        answers.append(posted.json())
    return answers


async def recorded(session_id: str, role: str, text: str) -> bool:
    return await ConversationItem.objects.filter(
        session_id=session_id, role=role, text=text
    ).aexists()


async def transcript(session_id: str) -> list[ConversationItem]:
    return [item async for item in ConversationItem.objects.filter(session_id=session_id)]


def turns(items: list[ConversationItem]) -> Counter:
    return Counter(
        (item.role, item.text) for item in items if item.kind == ConversationItem.Kind.MESSAGE
    )


def said(text: str) -> str:
    return f"You said: {text}. This is the voiceplatform simulator."


async def test_when_the_pod_holding_a_call_is_killed_another_takes_it_over_and_nothing_is_lost(
    pods, lease_store, simulator_process
):
    a, b = pods
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=20) as via_a,
        httpx.AsyncClient(base_url=b.url, timeout=20) as via_b,
    ):
        call = await open_call(via_a)
        session_id = call.session["session_id"]
        try:
            await held_by(lease_store, simulator_process, call, "pod-a", timeout=10)
            # The scripted user speaks once on its own; then a typed turn.
            await call.wait_for(
                lambda e: (
                    e.get("transcript") == SPOKEN_REPLY
                    and e["type"] == "response.output_audio_transcript.done"
                ),
                timeout=15,
            )
            first = await talk(call, "What is the weather like")
            assert await eventually(lambda: recorded(session_id, "assistant", first), timeout=10)
            before_kill = len(await transcript(session_id))

            a.process.send_signal(signal.SIGKILL)
            a.process.wait(5)
            killed_at = time.monotonic()
            # Said while nobody holds the sideband: only the browser sees it.
            gap = await talk(call, "Are you still there")
            takeover_seconds = await held_by(
                lease_store, simulator_process, call, "pod-b", timeout=15
            )
            takeover_seconds = time.monotonic() - killed_at
            after = await talk(call, "Tell me something new")
            tool_reply = await talk(call, "Please list files")
            assert await eventually(lambda: recorded(session_id, "assistant", after), timeout=10)
            assert await eventually(
                lambda: recorded(session_id, "assistant", tool_reply), timeout=10
            )
            before_relay = len(await transcript(session_id))
            relayed = await relay(via_b, call)
            ended = await via_b.post(
                call.session["urls"]["end"],
                headers={"Authorization": f"Bearer {call.session['session_token']}"},
            )
        finally:
            await call.close()

    items = await transcript(session_id)
    counted = turns(items)
    expected = {
        ("user", SPOKEN_TURN),
        ("assistant", SPOKEN_REPLY),
        ("user", "What is the weather like"),
        ("assistant", said("What is the weather like")),
        ("user", "Are you still there"),
        ("assistant", said("Are you still there")),
        ("user", "Tell me something new"),
        ("assistant", said("Tell me something new")),
        ("user", "Please list files"),
        ("assistant", tool_reply),
    }
    executions = [e async for e in ToolExecution.objects.filter(session_id=session_id)]
    print(
        f"\nkill drill: A killed; B held the lease after {takeover_seconds:.1f} s; "
        f"items before the kill {before_kill}, before the relay {before_relay}, after it "
        f"{len(items)} (relay changed {sum(r['changed'] for r in relayed)}); "
        f"tool executions {len(executions)}"
    )
    assert first == said("What is the weather like") and gap == said("Are you still there")
    assert takeover_seconds < LEASE_SECONDS + 5
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert set(counted) == expected, counted
    assert all(count == 1 for count in counted.values()), counted
    assert all(item.status == "completed" for item in items), [
        (i.item_id, i.status) for i in items if i.status != "completed"
    ]
    # The turn said while nobody listened came from the browser's relay.
    gap_items = [i for i in items if i.text in ("Are you still there", said("Are you still there"))]
    assert {i.source for i in gap_items} == {"client"}
    assert len(executions) == 1
    assert executions[0].origin == "sideband" and executions[0].status == "succeeded"
    assert "total" in tool_reply
    assert [i.kind for i in items].count("function_call") == 1
    assert [i.kind for i in items].count("function_call_output") == 1


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_drained_pod_takes_no_new_session_and_hands_its_calls_over(
    pods, lease_store, simulator_process
):
    a, b = pods
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=20) as via_a,
        httpx.AsyncClient(base_url=b.url, timeout=20) as via_b,
    ):
        call = await open_call(via_a)
        session_id = call.session["session_id"]
        try:
            await held_by(lease_store, simulator_process, call, "pod-a", timeout=10)
            first = await talk(call, "Good morning")
            ready_before = await via_a.get("/health/ready")

            drained = _manage("drain", "--timeout", "20", env=a.env)
            ready_after = await via_a.get("/health/ready")
            refused = await via_a.post("/session", json={})
            await held_by(lease_store, simulator_process, call, "pod-b", timeout=10)
            after = await talk(call, "Are you there after the drain")
            # B records it on the sideband itself: no relay needed.
            assert await eventually(lambda: recorded(session_id, "assistant", after), timeout=10)
            tool_reply = await talk(call, "Please list files")
            assert await eventually(
                lambda: recorded(session_id, "assistant", tool_reply), timeout=10
            )
            still_served = await via_b.post("/session", json={})
        finally:
            await call.close()

    items = await transcript(session_id)
    counted = turns(items)
    executions = [e async for e in ToolExecution.objects.filter(session_id=session_id)]
    print(f"\ndrain drill: {drained.stdout}items {len(items)}; tool executions {len(executions)}")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert f"session {session_id}: pod-a:" in drained.stdout
    assert "-> pod-b:" in drained.stdout and "this pod holds no call" in drained.stdout
    assert ready_before.status_code == 200
    assert ready_after.status_code == 503 and "draining" in ready_after.json()["reasons"]
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert int(refused.headers["Retry-After"]) > 0
    assert still_served.status_code == 201
    assert first == said("Good morning")
    assert counted[("assistant", said("Are you there after the drain"))] == 1
    assert all(count == 1 for count in counted.values()), counted
    assert len(executions) == 1 and executions[0].status == "succeeded"


async def test_a_task_that_ends_after_its_call_moved_to_another_pod_is_told_once_by_that_pod(
    pods, lease_store, simulator_process
):
    a, b = pods
    async with httpx.AsyncClient(base_url=a.url, timeout=20) as via_a:
        call = await open_call(via_a)
        session_id = call.session["session_id"]
        try:
            await held_by(lease_store, simulator_process, call, "pod-a", timeout=10)
            call.say("Please run 'sleep 6; echo moved-$((1000+1))'")
            await call.wait_for(
                lambda e: (
                    e["type"] == "response.output_audio_transcript.done"
                    and "Started task" in e["transcript"]
                ),
                timeout=20,
            )
            drained = _manage("drain", "--timeout", "20", env=a.env)
            await held_by(lease_store, simulator_process, call, "pod-b", timeout=10)
            told = await call.wait_for(
                lambda e: (
                    e["type"] == "response.output_audio_transcript.done"
                    and "moved-1001" in e["transcript"]
                ),
                timeout=30,
            )
            await asyncio.sleep(2)  # time for a second telling, were there one
        finally:
            await call.close()

    task = await Task.objects.aget(session_id=session_id)
    spoken = [
        e
        for e in call.events
        if e["type"] == "response.output_audio_transcript.done" and "moved-1001" in e["transcript"]
    ]
    print(f"\ntask drill: {drained.stdout.strip()}; told: {told['transcript']!r}")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert task.status == "succeeded" and task.delivery == "spoken"
    assert task.finished_at > task.created_at
    assert len(spoken) == 1
    assert leases.pod_of(holder_of(lease_store, session_id) or "x:0:0") == "pod-b"


async def test_sigterm_hands_the_calls_over_and_the_process_exits_in_time(
    pods, lease_store, simulator_process
):
    a, b = pods
    async with httpx.AsyncClient(base_url=a.url, timeout=20) as via_a:
        call = await open_call(via_a)
        session_id = call.session["session_id"]
        try:
            await held_by(lease_store, simulator_process, call, "pod-a", timeout=10)
            signalled = time.monotonic()
            a.process.send_signal(signal.SIGTERM)
            takeover = await held_by(lease_store, simulator_process, call, "pod-b", timeout=10)
            a.process.wait(15)
            exited = time.monotonic() - signalled
            after = await talk(call, "Hello again")
            assert await eventually(lambda: recorded(session_id, "assistant", after), timeout=10)
        finally:
            await call.close()

    print(f"\nsigterm drill: B held the call after {takeover:.1f} s; A exited after {exited:.1f} s")
    # Released, not lapsed: taken over faster than a lease runs out.
    assert takeover < LEASE_SECONDS
    assert exited < 15 and a.process.returncode is not None
    assert after == said("Hello again")


async def test_sigterm_lets_a_request_in_flight_be_answered_before_the_process_stops(
    pods, simulator_process
):
    """A rolling restart signals a pod while it answers an /sdp: the answer goes back
    (daphne's own SIGTERM would drop the connection, and the offer retried on another
    pod finds the session claimed: a 409)."""
    a, _ = pods
    simulator_process.fault("slow", delay=2.0, count=1, operations=["calls"])
    peer, _ = await offering_peer()
    async with httpx.AsyncClient(base_url=a.url, timeout=20) as via_a:
        try:
            session = (await via_a.post("/session", json={})).json()
            answering = asyncio.ensure_future(
                via_a.post(
                    "/sdp",
                    content=peer.localDescription.sdp,
                    headers={
                        "Content-Type": "application/sdp",
                        "Authorization": f"Bearer {session['session_token']}",
                    },
                )
            )
            upstream = await eventually(lambda: _status_is(session["session_id"], "connecting"))
            a.process.send_signal(signal.SIGTERM)
            answer = await answering
        finally:
            await peer.close()
    code = await asyncio.to_thread(a.process.wait, 15)

    assert upstream  # the offer was with the upstream when the signal came
    assert answer.status_code == 201 and answer.text.startswith("v=0")
    assert code == 0


async def _status_is(session_id: str, status: str) -> bool:
    return (await VoiceSession.objects.aget(pk=session_id)).status == status


async def test_a_tool_call_nobody_held_the_call_for_is_answered_once_by_the_next_holder(
    http, simulator
):
    call = await open_call(http)
    session_id = call.session["session_id"]
    try:
        await held(call)
        await sideband.detach(session_id)  # the holder goes (drained, or dead)
        call.say("Please list files")
        # The model calls a tool while nobody holds the call; only the page sees it.
        await call.wait_for(
            lambda e: (
                e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call"
            ),
            timeout=30,
            what="function_call item",
        )
        await relay(http, call)
        sideband.attach(session_id, call.call_id, actions.SIDEBAND_HANDLERS)  # a sweep
        reply = await talk_reply(call)
        # Taken over once more: what was answered is not answered again.
        await sideband.detach(session_id)
        sideband.attach(session_id, call.call_id, actions.SIDEBAND_HANDLERS)
        await held(call)
        await asyncio.sleep(1.0)
    finally:
        await call.close()

    outputs = [
        e
        for e in simulator.call(call.call_id)["events_received"]
        if e.get("item", {}).get("type") == "function_call_output"
    ]
    executions = [e async for e in ToolExecution.objects.filter(session_id=session_id)]
    assert reply.startswith("Here is what I found") and "total" in reply
    assert len(executions) == 1 and executions[0].origin == "sideband"
    assert len(outputs) == 1


async def test_a_holder_told_to_stop_stops_even_when_an_await_swallowed_the_cancellation(
    http, simulator, lease_store
):
    call = await open_call(http)
    session_id = call.session["session_id"]
    recording = asyncio.Event()

    async def swallowing(session_id: str, realtime_events: list[dict]) -> int:
        # What asgiref's sync_to_async does when its thread's work ends as the
        # cancellation comes (and 3.11's wait_for when its future does): the await
        # returns, and the CancelledError is gone.
        recording.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.5)
        return 0

    try:
        await sideband.detach(session_id)  # the holder /sdp started
        handlers = dataclasses.replace(actions.SIDEBAND_HANDLERS, transcript=swallowing)
        sideband.attach(session_id, call.call_id, handlers)
        # The upstream's first event on the sideband (session.created) is being recorded.
        await asyncio.wait_for(recording.wait(), 15)

        stopping = asyncio.ensure_future(sideband.detach(session_id))
        stopped, _ = await asyncio.wait({stopping}, timeout=5)
    finally:
        await call.close()

    assert stopped, "the holder still listened 5 s after it was told to stop"
    assert session_id not in sideband.held()
    assert holder_of(lease_store, session_id) == ""  # let go, not left to lapse
    assert not (await VoiceSession.objects.aget(pk=session_id)).sideband_connected


def _staff_cookie() -> str:
    """The login cookie of a member of staff who may watch calls (pods share sessions)."""
    staff = User.objects.create_superuser("watcher", password="x")
    client = Client()
    client.force_login(staff)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def test_a_live_view_on_another_pod_follows_the_call_through_a_takeover(
    pods, lease_store, simulator_process
):
    a, b = pods
    cookie = await sync_to_async(_staff_cookie)()
    seen: list[str] = []

    async def watch(socket) -> None:
        async for message in socket:
            update = json.loads(message)
            if update["type"] == "live.timeline":
                seen.extend(html for _, html in update["entries"])

    async def shown(text: str) -> bool:
        return any(text in html for html in seen)

    async with httpx.AsyncClient(base_url=a.url, timeout=20) as via_a:
        call = await open_call(via_a)
        session_id = call.session["session_id"]
        url = f"ws://127.0.0.1:{b.port}/ws/ops/sessions/{session_id}/live/"
        try:
            await held_by(lease_store, simulator_process, call, "pod-a", timeout=10)
            async with connect(
                url, additional_headers={"Cookie": cookie, "Origin": b.url}
            ) as socket:
                watching = asyncio.create_task(watch(socket))
                await talk(call, "said while pod-a holds the call")
                before = await eventually(lambda: shown("said while pod-a holds the call"))
                a.stop()  # SIGKILL
                await held_by(lease_store, simulator_process, call, "pod-b", timeout=20)
                await talk(call, "said once pod-b holds the call")
                after = await eventually(lambda: shown("said once pod-b holds the call"))
                watching.cancel()
        finally:
            await call.close()

    assert before, "the watcher on pod-b did not see a turn pod-a recorded"
    assert after, "the watcher did not see a turn recorded after pod-b took the call over"
