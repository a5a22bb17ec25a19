"""The multi-pod drill, through the real proxy: an nginx master of the drill's own (its
config rendered from deploy/nginx/nginx.conf by scripts/render_nginx.py, every path it
writes in a temporary directory) in front of two daphne processes (POD_NAME web-1 and
web-2) on the shared test PostgreSQL and Redis, the simulator upstream, tools run
in-process. All on loopback; nginx's access log says which pod served each request.

(b) a session's /sdp, /tools and events WebSocket reach its pod: by the VOICE_AFFINITY
    cookie, and, for a client without cookies, by X-Voice-Session-Id;
(c) kill -9 of the pod holding a live call: the other takes it over within the lease,
    the transcript is complete, the tool runs once;
(d) a rolling restart (SIGTERM web-1, start it again, then web-2) under a steady stream
    of /session + /sdp: no request fails for a client that honours Retry-After once,
    no transcript is lost."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis
import websockets
from django.conf import settings
from django.db import connection

from sessions_app import leases
from sessions_app.models import VoiceSession
from sessions_app.probe import ProbeCall, open_call
from tests.deploy.support import nginx_renderer
from tests.sessions_app.test_sideband_takeover import (
    SPOKEN_REPLY,
    SPOKEN_TURN,
    held_by,
    holder_of,
    recorded,
    relay,
    said,
    talk,
    transcript,
    turns,
)
from tests.support import ROOT, daphne, database_env, eventually, free_port, start_server
from tools_app.models import ToolExecution

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not shutil.which("nginx"), reason="nginx is not installed (scripts/services.sh installs it)"
    ),
    # Two servers, a proxy and several calls on a loaded 2-core machine.
    pytest.mark.timeout(600),
]

LEASE_SECONDS = 3.0
PODS = ("web-1", "web-2")


class Pod:
    """One web process on a fixed port: stopped and started again on the same one."""

    def __init__(self, name: str, env: dict[str, str], home: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**env, "POD_NAME": name, "PORT": str(self.port)}
        self.env["VAR_DIR"] = str(home / name / "var")
        self.home = home
        self.starts = 0
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.starts += 1
        log = self.home / f"{self.name}-{self.starts}.log"
        self.process = start_server(daphne(self.port), self.port, self.env, log)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Proxy:
    """nginx as compose runs it, rendered for the pods' loopback ports."""

    def __init__(self, pods: dict[str, Pod], home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home
        self.pods_by_port = {pod.port: pod.name for pod in pods.values()}
        conf = nginx_renderer().render(
            (ROOT / "deploy/nginx/nginx.conf").read_text(),
            listen=self.port,
            upstreams={name: pod.port for name, pod in pods.items()},
            prefix=home,
        )
        (home / "nginx.conf").write_text(conf)
        self.process = subprocess.Popen(
            ["nginx", "-p", str(home), "-c", "nginx.conf", "-e", "error.log", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(home / "nginx.out").open("wb"),
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/nginx-health", timeout=1).status_code == 200:
                    break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(home / 'nginx.out').read_text()}")
            time.sleep(0.1)

    def log_mark(self) -> int:
        path = self.home / "access.log"
        return path.stat().st_size if path.exists() else 0

    def served(self, since: int) -> list[tuple[str, str, int, list[str]]]:
        """(method, path, status, pods tried in order) of each request logged since."""
        with (self.home / "access.log").open("rb") as log:
            log.seek(since)
            lines = log.read().decode().splitlines()
        served = []
        for line in lines:
            method, path, status, upstreams = re.match(
                r'(\S+) (\S+) (\d+) "([^"]*)"', line
            ).groups()
            tried = [
                self.pods_by_port.get(int(port), port)
                for port in re.findall(r"127\.0\.0\.1:(\d+)", upstreams)
            ]
            served.append((method, path, int(status), tried))
        return served

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: workers finish and go
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Cluster:
    def __init__(self, pods: dict[str, Pod], proxy: Proxy) -> None:
        self.pods = pods
        self.proxy = proxy

    def client(self, **options) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.proxy.url, timeout=30, **options)


@pytest.fixture
def cluster(simulator_process, tmp_path):
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
        "DRAIN_HANDOVER_SECONDS": "3",
        "DRAIN_RETRY_AFTER_SECONDS": "1",
        "SESSION_AFFINITY_COOKIE": "app",
        "TOOL_WORKSPACE_ROOT": str(tmp_path / "workspaces"),
        "TOOL_ISOLATION": "rlimits",
        # The stream's many clients all come from one loopback address.
        "SESSION_RATE_LIMIT_PER_IP": "1000",
        "SESSION_LIVE_PER_IP": "1000",
        "SESSION_LIVE_PER_CALLER": "1000",
    }
    # nginx's workers (nobody, when the master is root) reach its temp paths: not under
    # pytest's private tmp_path.
    home = Path(tempfile.mkdtemp(prefix="nginx-drill-"))
    home.chmod(0o755)
    pods: dict[str, Pod] = {}
    proxy = None
    try:
        for name in PODS:
            pods[name] = Pod(name, env, tmp_path)
            pods[name].start()
        proxy = Proxy(pods, home)
        yield Cluster(pods, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        for pod in pods.values():
            pod.stop()
        if (home / "error.log").exists():  # what nginx said, in the test's report
            print(f"\nnginx error.log:\n{(home / 'error.log').read_text()[-4000:]}")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def lease_store():
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


def bearer(session: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['session_token']}"}


async def once_more_after(send, tally: Counter | None = None, key: str = "") -> httpx.Response:
    """What a client that honours Retry-After does: on a 429 or 503 that names one, it
    waits that long (at most 5 s here) and tries once more."""
    response = await send()
    if response.status_code in (429, 503) and "Retry-After" in response.headers:
        if tally is not None:
            tally[key] += 1
        await asyncio.sleep(min(float(response.headers["Retry-After"]), 5.0))
        response = await send()
    return response


async def events_socket(proxy: Proxy, session: dict, headers: dict[str, str]) -> None:
    """Opens the session's events WebSocket through nginx (the handshake is what routes)
    and closes it."""
    url = proxy.url.replace("http://", "ws://") + session["urls"]["ws"]
    async with websockets.connect(
        url,
        subprotocols=["voiceplatform.v1", f"bearer.{session['session_token']}"],
        additional_headers={"Origin": proxy.url, **headers},
        open_timeout=20,
    ) as socket:
        assert socket.subprotocol == "voiceplatform.v1"


async def test_a_sessions_requests_reach_its_pod_by_cookie_or_by_session_header(
    cluster, lease_store, simulator_process
):
    proxy = cluster.proxy
    routes = {}
    for kind in ("cookie", "header"):
        mark = proxy.log_mark()
        async with cluster.client() as client:
            created = await client.post("/session", json={})
            assert created.status_code == 201, created.text
            session = created.json()
            creator = created.cookies.get("VOICE_AFFINITY")
            if kind == "header":  # a client that keeps no cookie, and says its session
                client.cookies.clear()
                client.headers["X-Voice-Session-Id"] = session["session_id"]
            call = await open_call(client, session=session)
            try:
                tools = await client.get(session["urls"]["tools"], headers=bearer(session))
                # What a browser's socket carries: the cookie; or the session's header.
                routing = (
                    {"Cookie": f"VOICE_AFFINITY={creator}"}
                    if kind == "cookie"
                    else {"X-Voice-Session-Id": session["session_id"]}
                )
                await events_socket(proxy, session, routing)
                holder = await eventually(
                    lambda sid=session["session_id"]: _holder(lease_store, sid), timeout=15
                )
            finally:
                await call.close()
        served = [s for s in proxy.served(mark) if not s[1].startswith("/session")]
        routes[kind] = (creator, holder, served)
        assert tools.status_code == 200, tools.text
        assert [path.split("?")[0] for _, path, _, _ in served] == [
            "/sdp",
            "/tools/",
            session["urls"]["ws"],
        ], served
        # Each went to one pod, the first asked, and that pod holds the call.
        assert {tuple(tried) for *_, tried in served} == {(holder,)}, served
        if kind == "cookie":
            assert holder == creator

    print(
        "\nrouting drill: "
        + "; ".join(
            f"{kind}: created on {creator or '?'}, sdp/tools/ws on {holder}"
            for kind, (creator, holder, _) in routes.items()
        )
    )


async def _holder(store: redis.Redis, session_id: str) -> str:
    value = holder_of(store, session_id)
    return leases.pod_of(value) if value else ""


async def test_kill_9_of_the_pod_holding_a_call_loses_no_turn_and_runs_no_tool_twice(
    cluster, lease_store, simulator_process
):
    async with cluster.client() as client:
        call = await open_call(client)
        session_id = call.session["session_id"]
        try:
            first_pod = client.cookies["VOICE_AFFINITY"]
            other = next(name for name in PODS if name != first_pod)
            await held_by(lease_store, simulator_process, call, first_pod, timeout=15)
            await call.wait_for(
                lambda e: (
                    e["type"] == "response.output_audio_transcript.done"
                    and e.get("transcript") == SPOKEN_REPLY
                ),
                timeout=20,
            )
            first = await talk(call, "What is the weather like")
            assert await eventually(lambda: recorded(session_id, "assistant", first), timeout=15)

            cluster.pods[first_pod].signal(signal.SIGKILL)
            cluster.pods[first_pod].wait(10)
            killed_at = time.monotonic()
            gap = await talk(call, "Are you still there")
            await held_by(lease_store, simulator_process, call, other, timeout=LEASE_SECONDS + 15)
            takeover_seconds = time.monotonic() - killed_at
            tool_reply = await talk(call, "Please list files")
            assert await eventually(
                lambda: recorded(session_id, "assistant", tool_reply), timeout=15
            )
            # The page's relay and its hangup, through nginx: the cookie names the dead
            # pod, whose upstream hands them to the other.
            await relay(client, call)
            ended = await client.post(call.session["urls"]["end"], headers=bearer(call.session))
        finally:
            await call.close()

    items = await transcript(session_id)
    counted = turns(items)
    executions = [e async for e in ToolExecution.objects.filter(session_id=session_id)]
    print(
        f"\nkill drill through nginx: {first_pod} killed; {other} held the call after "
        f"{takeover_seconds:.1f} s (lease {LEASE_SECONDS:.0f} s); items {len(items)}; "
        f"tool executions {len(executions)}"
    )
    assert gap == said("Are you still there")
    assert takeover_seconds < LEASE_SECONDS + 15
    assert ended.status_code == 200, ended.text
    assert set(counted) == {
        ("user", SPOKEN_TURN),
        ("assistant", SPOKEN_REPLY),
        ("user", "What is the weather like"),
        ("assistant", said("What is the weather like")),
        ("user", "Are you still there"),
        ("assistant", said("Are you still there")),
        ("user", "Please list files"),
        ("assistant", tool_reply),
    }, counted
    assert all(count == 1 for count in counted.values()), counted
    assert len(executions) == 1 and executions[0].status == "succeeded"
    assert "total" in tool_reply


async def test_a_rolling_restart_under_a_stream_of_calls_fails_no_request_and_loses_no_turn(
    cluster, simulator_process
):
    calls: list[tuple[httpx.AsyncClient, ProbeCall]] = []
    failures: list[str] = []
    retried = Counter()
    starting: list[asyncio.Task] = []
    restarted = asyncio.Event()

    async def one_call() -> None:
        client = cluster.client()
        try:
            created = await once_more_after(
                lambda: client.post("/session", json={}), retried, "session"
            )
            if created.status_code != 201:
                failures.append(f"/session {created.status_code} {created.text}")
                await client.aclose()
                return
            call = None
            for attempt in range(2):
                try:
                    call = await open_call(client, session=created.json(), timeout=20)
                    break
                except httpx.HTTPStatusError as exc:
                    answer = exc.response
                    if attempt or "Retry-After" not in answer.headers:
                        failures.append(f"/sdp {answer.status_code} {answer.text}")
                        break
                    retried["sdp"] += 1
                    await asyncio.sleep(min(float(answer.headers["Retry-After"]), 5.0))
            if call is None:
                await client.aclose()
                return
            calls.append((client, call))
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            await client.aclose()

    async def stream() -> int:
        started = 0
        # Steady and bounded: one call a second while the pods restart, 30 at most.
        while started < 30 and (started < 4 or not restarted.is_set()):
            starting.append(asyncio.ensure_future(one_call()))
            started += 1
            await asyncio.sleep(1.0)
        return started

    async def roll() -> list[str]:
        steps = []
        await asyncio.sleep(2.0)
        for name in PODS:
            pod = cluster.pods[name]
            signalled = time.monotonic()
            pod.signal(signal.SIGTERM)
            code = await asyncio.to_thread(pod.wait, 30)
            stopped = time.monotonic() - signalled
            await asyncio.to_thread(pod.start)
            steps.append(
                f"{name}: exited {code} after {stopped:.1f} s, serving again after "
                f"{time.monotonic() - signalled:.1f} s"
            )
            # A rollout's pause between pods (the new one is serving: start waited).
            await asyncio.sleep(3.0)
        restarted.set()
        return steps

    rolled_at = time.monotonic()
    started, steps = await asyncio.gather(stream(), roll())
    # Every call the stream started has connected, or failed, before the check.
    await asyncio.wait_for(asyncio.gather(*starting), 90)
    rolled_seconds = time.monotonic() - rolled_at

    lost = []
    try:
        for client, call in calls:
            # The scripted user speaks once on each call; the page relays what its data
            # channel saw (whoever held the sideband meanwhile) and hangs up.
            await call.wait_for(
                lambda e: (
                    e["type"] == "response.output_audio_transcript.done"
                    and e.get("transcript") == SPOKEN_REPLY
                ),
                timeout=30,
            )
            auth = bearer(call.session)
            posted = await once_more_after(
                lambda c=client, call=call, auth=auth: c.post(
                    call.session["urls"]["events"], json={"events": call.events}, headers=auth
                )
            )
            ended = await once_more_after(
                lambda c=client, call=call, auth=auth: c.post(
                    call.session["urls"]["end"], headers=auth
                )
            )
            if posted.status_code != 200 or ended.status_code != 200:
                failures.append(f"relay {posted.status_code}, end {ended.status_code}")
    finally:
        for client, call in calls:
            await call.close()
            await client.aclose()

    for _, call in calls:
        counted = turns(await transcript(call.session["session_id"]))
        if counted != Counter({("user", SPOKEN_TURN): 1, ("assistant", SPOKEN_REPLY): 1}):
            lost.append((call.session["session_id"], counted))
    pods_of = Counter(
        [
            s.pod
            async for s in VoiceSession.objects.filter(
                pk__in=[c.session["session_id"] for _, c in calls]
            )
        ]
    )
    print(
        f"\nrolling restart through nginx: {'; '.join(steps)}; {started} calls in "
        f"{rolled_seconds:.1f} s, created on {dict(pods_of)}, {len(calls)} connected, "
        f"{len(failures)} failed, retried after Retry-After: {dict(retried)}"
    )
    assert failures == [], [failure[:160] for failure in failures]
    assert len(calls) == started
    assert lost == []
