"""Fault drill: Redis stops in the middle of a conversation. New sessions, relayed
events and the end still work (process-local cache, rate limits, breakers and channel
layer); /health says degraded with redis failing while /health/ready stays 200 (Redis is
shared: a readiness that followed it would take every pod out at once); when Redis
comes back, everything goes back to it by itself within seconds.

The drill stops only a Redis of its own, on a free loopback port."""

from __future__ import annotations

import json
import sys
import time

import httpx
import pytest
import redis
from django.db import connection
from websockets.sync.client import connect

from sessions_app.events import LiveEvent
from tests.support import database_env, free_port, start_server, stop_server

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_SECONDS = 15.0

EVENTS = [
    {"type": "input_audio_buffer.committed", "item_id": "item_u1"},
    {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_u1",
        "transcript": "Is the weather nice?",
    },
]
EVENTS_IN_OUTAGE = [
    {"type": "input_audio_buffer.committed", "item_id": "item_u2"},
    {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_u2",
        "transcript": "Are you still there?",
    },
]


def _until(check, what: str) -> float:
    """Seconds until check() is true, at most WAIT_SECONDS."""
    started = time.monotonic()
    while time.monotonic() - started < WAIT_SECONDS:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {WAIT_SECONDS:g} s: {what}")


def _new_session(http: httpx.Client) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = http.post("/session", json={})
    return response, time.monotonic() - started


def _auth(session: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['session_token']}"}


def _live_events(url: str, session: dict):
    socket = connect(
        f"{url.replace('http', 'ws')}/ws/sessions/{session['session_id']}/",
        subprotocols=["voiceplatform.v1", f"bearer.{session['session_token']}"],
        origin=url,
        open_timeout=5,
    )
    return socket


def _next_of(socket, kind: str) -> dict:
    deadline = time.monotonic() + WAIT_SECONDS
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = json.loads(socket.recv(timeout=left))
        except TimeoutError:
            break
        if event.get("type") == kind:
            return event
        seen.append(event.get("type"))
    raise TimeoutError(f"no {kind} event within {WAIT_SECONDS} s; saw {seen}")


@pytest.fixture(params=["tasks in-process", "tasks through the broker"])
def server(request, own_redis, tmp_path):
    """The server on our Redis: with tasks run in-process (no broker needed), or
    queued on Redis as the broker with no worker running (tools unavailable)."""
    port = free_port()
    env = {
        **database_env(connection.settings_dict),
        "REDIS_URL": own_redis.url,
        "CELERY_TASK_ALWAYS_EAGER": "1" if request.param == "tasks in-process" else "0",
        "OPENAI_API_KEY": "",
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        "PORT": str(port),
        "VAR_DIR": str(tmp_path / "var"),
    }
    log = tmp_path / "server.log"
    process = start_server(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "voiceplatform.asgi:application",
        ],
        port,
        env,
        log,
    )
    yield f"http://127.0.0.1:{port}", log, request.param
    stop_server(process)


def test_a_redis_outage_mid_conversation_degrades_health_and_never_answers_500(own_redis, server):
    url, log, tasks = server
    observed: dict[str, object] = {"tasks": tasks}
    with httpx.Client(base_url=url, timeout=20) as http:
        # Given a conversation under way, with its page listening for live events.
        first, _ = _new_session(http)
        assert first.status_code == 201, first.text
        session = first.json()
        relayed = http.post(
            session["urls"]["events"], json={"events": EVENTS}, headers=_auth(session)
        )
        assert relayed.status_code == 200, relayed.text
        socket = _live_events(url, session)
        _next_of(socket, LiveEvent.SESSION_STATE)

        # When Redis stops.
        own_redis.kill()

        # Then new sessions, relayed events and the end still work.
        during, seconds = _new_session(http)
        observed["new session in outage"] = (during.status_code, round(seconds, 2))
        assert during.status_code == 201, during.text
        again, seconds = _new_session(http)
        observed["second new session in outage"] = (again.status_code, round(seconds, 2))
        assert again.status_code == 201, again.text
        relayed = http.post(
            session["urls"]["events"], json={"events": EVENTS_IN_OUTAGE}, headers=_auth(session)
        )
        observed["events in outage"] = relayed.status_code
        assert relayed.status_code == 200, relayed.text
        tool = http.post(
            "/tools/write_file",
            json={
                "call_id": "call_outage",
                "arguments": {"file_path": "note.txt", "content": "written in the outage"},
            },
            headers=_auth(session),
        )
        answer = tool.json()
        outcome = answer["error"]["code"] if tool.status_code >= 400 else answer["status"]
        observed["tool in outage"] = (tool.status_code, outcome)
        if tasks == "tasks through the broker":
            # No worker answers through a dead broker: level 2, tools refused.
            assert (tool.status_code, outcome) == (503, "tools_unavailable")
        else:
            # Run in-process; its waiter is woken through the in-memory layer.
            assert (tool.status_code, outcome) == (200, "succeeded"), answer
        started = time.monotonic()
        ended = http.post(session["urls"]["end"], headers=_auth(session))
        observed["end in outage"] = (ended.status_code, round(time.monotonic() - started, 2))
        assert ended.status_code == 200, ended.text
        assert ended.json()["status"] == "ended"
        # The page on this process still hears the end (the in-memory layer).
        assert _next_of(socket, LiveEvent.SESSION_ENDED)["reason"]
        socket.close()

        # And health says so: degraded, redis failing; the pod stays ready (it serves).
        def health_degraded() -> bool:
            health = http.get("/health")
            body = health.json()
            observed["health in outage"] = (health.status_code, body["status"], body["level"])
            observed["failing checks in outage"] = sorted(
                name for name, check in body["checks"].items() if check["status"] == "failing"
            )
            return (
                health.status_code == 200
                and body["status"] == "degraded"
                and body["checks"]["redis"]["status"] == "failing"
                and (tasks == "tasks in-process" or body["level"] == 2)
            )

        _until(health_degraded, "/health degraded with redis failing")
        ready = http.get("/health/ready")
        observed["ready in outage"] = (ready.status_code, ready.json().get("reasons"))
        assert ready.status_code == 200, ready.text

        # When Redis comes back on the same port.
        own_redis.start()

        # Then within seconds health is whole again and sessions use Redis again.
        def redis_ok() -> bool:
            health = http.get("/health")
            return health.json()["checks"]["redis"]["status"] == "ok"

        observed["seconds until /health redis ok"] = round(_until(redis_ok, "redis ok"), 1)
        observed["seconds until /health/ready 200"] = round(
            _until(lambda: http.get("/health/ready").status_code == 200, "ready"), 1
        )
        after, seconds = _new_session(http)
        observed["new session after"] = (after.status_code, round(seconds, 2))
        assert after.status_code == 201, after.text
        # Its rate-limit count went to Redis, not to the process-local cache.
        back = redis.Redis.from_url(own_redis.url)
        assert list(back.scan_iter("*rl:session:ip:*")), "no rate-limit key in Redis"
        back.close()

    lines = log.read_text(errors="replace")
    observed["log: unreachable"] = lines.count('"redis_unreachable"')
    observed["log: back"] = lines.count('"redis_back"')
    observed["log: tracebacks"] = lines.count("Traceback")
    print("redis outage drill:", json.dumps(observed))  # noqa: T201 (the drill's report)
    assert observed["log: unreachable"] >= 1 and observed["log: back"] >= 1
