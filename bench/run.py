#!/usr/bin/env python
"""The benchmark: everything it measures runs on 127.0.0.1, started here.

    python bench/run.py [--quick] [--json out.json]

- the simulator in its own process (the upstream), alone;
- the floor (bench/floor.py): a bare ASGI passthrough with one pooled httpx client;
- the peer (bench/peer.py): amplifier-voice's handler shape, a new httpx client for
  every request;
- our server under daphne with PostgreSQL + Redis, and in the embedded default;
- Celery workers for tool dispatch.

Targets are interleaved block by block, so noise on the machine hits all alike.
Uses DATABASE_URL / REDIS_URL when set, else its own database (vp_bench) and Redis
db 8 (the test suite uses test_voiceplatform and db 9).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/vp_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"
SIM_KEY = "sk-sim-local"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
UNLIMITED = "1000000000"
POD = "vp-bench"


@dataclass(frozen=True)
class Plan:
    clients: tuple[int, ...]
    requests_per_level: dict[int, int]
    blocks: int
    held: tuple[int, ...]
    hold_seconds: float
    event_every_seconds: float
    tool_rounds: int
    tool_workers: tuple[int, ...]
    webhooks: int
    traffic: tuple[int, ...]
    traffic_seconds: float


QUICK = Plan(
    clients=(1, 10),
    requests_per_level={1: 20, 10: 40},
    blocks=2,
    held=(100,),
    hold_seconds=6,
    event_every_seconds=3,
    tool_rounds=40,
    tool_workers=(1,),
    webhooks=200,
    traffic=(200,),
    traffic_seconds=20,
)
FULL = Plan(
    clients=(1, 10, 50, 100),
    requests_per_level={1: 60, 10: 120, 50: 200, 100: 300},
    blocks=2,
    held=(100, 500, 1000),
    hold_seconds=15,
    event_every_seconds=10,
    tool_rounds=200,
    tool_workers=(1, 2),
    webhooks=1500,
    traffic=(500, 1000, 2000),
    traffic_seconds=60,
)


# --- numbers ------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values_ms: list[float]) -> dict:
    return {
        "p50": round(pct(values_ms, 0.5), 2),
        "p95": round(pct(values_ms, 0.95), 2),
        "p99": round(pct(values_ms, 0.99), 2),
        "n": len(values_ms),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def write_json(path: str | Path, results: dict) -> None:
    """The results as JSON (keys as issue 12 names them; client counts as strings)."""
    Path(path).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


# --- processes ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    url: str
    pid: int = 0

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start(name: str, args: list[str], env: dict, logs: Path, url: str, live: str) -> Proc:
    with (logs / f"{name}.log").open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: see {logs}/{name}.log")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + live, timeout=1).status_code == 200:
                return Proc(name, process, url, process.pid)
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not come up: see {logs}/{name}.log")


def daphne(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]


def base_env(var: Path) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        "LOG_LEVEL": "WARNING",
        "VAR_DIR": str(var),
        "TOOL_WORKSPACE_ROOT": str(var / "workspaces"),
        "DATABASE_URL_FILE": "",
        "REDIS_URL_FILE": "",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def server_env(var: Path, sim_url: str, *, database_url: str, redis_url: str) -> dict:
    """Our server with the simulator process as its upstream and no limit in the way."""
    return {
        **base_env(var),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "",
        "SIMULATOR_ENABLED": "0",
        "OPENAI_BASE_URL": sim_url,
        "CELERY_TASK_ALWAYS_EAGER": "0" if redis_url else "1",
        "SESSION_RATE_LIMIT_PER_IP": UNLIMITED,
        "SESSION_RATE_LIMIT_PER_USER": UNLIMITED,
        "SESSION_CAPACITY": UNLIMITED,
        "SESSION_LIVE_PER_IP": UNLIMITED,
        "SESSION_LIVE_PER_CALLER": UNLIMITED,
        "WEBHOOK_RATE_PER_MINUTE": UNLIMITED,
        "WS_MAX_PER_IP": UNLIMITED,
        "TOOLS_RATE_PER_MINUTE": UNLIMITED,
        "SESSION_CONNECT_GRACE_SECONDS": "600",
        # Its sessions are told apart (and left-over live ones ended) by this pod name.
        "POD_NAME": POD,
    }


def migrate(env: dict) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def end_leftovers() -> int:
    """Ends the live sessions an interrupted earlier run left behind (this pod's only),
    so a new server does not spend the run taking their calls over."""
    from django.utils import timezone

    from sessions_app.models import VoiceSession

    return VoiceSession.objects.filter(pod=POD, status__in=VoiceSession.LIVE_STATUSES).update(
        status="expired", ended_at=timezone.now(), end_reason="max_duration"
    )


def ensure_database(url: str) -> None:
    """Creates the benchmark's PostgreSQL database when it does not exist yet."""
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# --- targets for /session and /sdp --------------------------------------------------
class Target:
    """One thing answering the two calls; cleanup (not timed) hangs calls up."""

    name = ""

    def __init__(self, http: httpx.AsyncClient, pid: int, sim: str) -> None:
        self.http, self.pid, self.sim = http, pid, sim
        self.leftovers: list = []

    async def round(self, offer: str | None) -> tuple[float, float, bool]:
        """/session then /sdp of offer (/session alone without one): (session ms,
        sdp ms, both answered)."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        leftovers, self.leftovers = self.leftovers, []
        sem = asyncio.Semaphore(20)

        async def one(item):
            async with sem:
                with contextlib.suppress(httpx.HTTPError):
                    await self.hang_up(item)

        await asyncio.gather(*(one(item) for item in leftovers))

    async def hang_up(self, item) -> None:
        await self.http.post(
            f"{self.sim}/v1/realtime/calls/{item}/hangup",
            headers={"Authorization": f"Bearer {SIM_KEY}"},
        )


async def _timed(call):
    started = time.perf_counter()
    response = await call
    return response, (time.perf_counter() - started) * 1000


class SimulatorAlone(Target):
    name = "simulator"

    async def round(self, offer):
        secret, t1 = await _timed(
            self.http.post(
                f"{self.sim}/v1/realtime/client_secrets",
                headers={"Authorization": f"Bearer {SIM_KEY}"},
                json={"session": {"type": "realtime", "model": "gpt-realtime"}},
            )
        )
        if secret.status_code != 200 or offer is None:
            return t1, 0.0, secret.status_code == 200
        call, t2 = await _timed(
            self.http.post(
                f"{self.sim}/v1/realtime/calls",
                content=offer,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {secret.json()['value']}",
                },
            )
        )
        if call.status_code == 201:
            self.leftovers.append(call.headers["location"].rsplit("/", 1)[-1])
        return t1, t2, call.status_code == 201


class Floor(Target):
    name = "floor"

    def __init__(self, http, pid, sim, url) -> None:
        super().__init__(http, pid, sim)
        self.url = url

    ok = 201  # what both calls answer

    def secret_of(self, answer: httpx.Response) -> str:
        return answer.json()["value"]

    async def round(self, offer):
        secret, t1 = await _timed(self.http.post(f"{self.url}/session", json={}))
        if secret.status_code != self.ok or offer is None:
            return t1, 0.0, secret.status_code == self.ok
        call, t2 = await _timed(
            self.http.post(
                f"{self.url}/sdp",
                content=offer,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {self.secret_of(secret)}",
                },
            )
        )
        if call.status_code == self.ok:
            self.leftovers.append(call.headers["x-call-id"])
        return t1, t2, call.status_code == self.ok


class Peer(Floor):
    """amplifier-voice's shape: the secret comes back as client_secret.value, and both
    calls answer 200."""

    name = "peer"
    ok = 200

    def secret_of(self, answer: httpx.Response) -> str:
        return answer.json()["client_secret"]["value"]


class Ours(Target):
    def __init__(self, http, pid, sim, url, name) -> None:
        super().__init__(http, pid, sim)
        self.url, self.name = url, name

    async def round(self, offer):
        created, t1 = await _timed(self.http.post(f"{self.url}/session", json={}))
        if created.status_code != 201:
            return t1, 0.0, False
        session = created.json()
        auth = {"Authorization": f"Bearer {session['session_token']}"}
        self.leftovers.append((session["urls"]["end"], auth))
        if offer is None:
            return t1, 0.0, True
        call, t2 = await _timed(
            self.http.post(
                f"{self.url}/sdp",
                content=offer,
                headers={"Content-Type": "application/sdp", **auth},
            )
        )
        return t1, t2, call.status_code == 201

    async def hang_up(self, item) -> None:
        end, auth = item
        await self.http.post(self.url + end, headers=auth)

    async def stats(self, reset: bool = False) -> dict:
        path = "/__bench/reset" if reset else "/__bench/stats"
        return (await self.http.post(self.url + path)).json()


@dataclass
class Measured:
    session_ms: list[float] = field(default_factory=list)
    sdp_ms: list[float] = field(default_factory=list)
    errors: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    requests: int = 0
    # /session alone, in blocks beside the pairs' (one client): what splits their CPU.
    alone: Measured | None = None

    def cpu_split(self) -> tuple[float, float] | None:
        """CPU ms per /session (timed alone) and per /sdp (a pair's less that)."""
        if self.alone is None or not self.alone.requests or not self.requests:
            return None
        session = 1000 * self.alone.cpu / self.alone.requests
        return session, 2000 * self.cpu / self.requests - session


async def drive(
    target: Target, offer: str | None, clients: int, rounds: int, into: Measured
) -> None:
    """clients callers, rounds /session + /sdp pairs in all (/session alone without an
    offer); CPU of the target's process over the block."""
    queue = list(range(rounds))

    async def caller():
        while queue:
            queue.pop()
            t1, t2, ok = await target.round(offer)
            into.session_ms.append(t1)
            if not ok:
                into.errors += 1
            elif offer is not None:
                into.sdp_ms.append(t2)

    cpu = cpu_seconds(target.pid)
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    into.wall += time.perf_counter() - started
    into.cpu += cpu_seconds(target.pid) - cpu
    into.requests += (1 if offer is None else 2) * rounds
    await target.cleanup()


# Before a block of /session alone: the hang-ups after the last pairs have finished
# (their CPU would count as /session's).
SETTLE_SECONDS = 1.0


async def latency(targets: list[Target], offer: str, plan: Plan, log) -> dict:
    results: dict = {}
    for clients in plan.clients:
        measured = {t.name: Measured() for t in targets}
        per_block = max(clients, plan.requests_per_level[clients] // plan.blocks)
        for block in range(plan.blocks):
            order = targets[block % len(targets) :] + targets[: block % len(targets)]
            for target in order:
                await drive(target, offer, clients, per_block, measured[target.name])
            if clients == 1:  # /session alone, in a rotation of its own
                for target in order:
                    await asyncio.sleep(SETTLE_SECONDS)  # what the pairs' cleanup started
                    alone = measured[target.name].alone = measured[target.name].alone or Measured()
                    await drive(target, None, clients, per_block, alone)
        results[clients] = measured
        log(f"  /session + /sdp at {clients} client(s): done")
    return results


# --- live sessions held -------------------------------------------------------------
class Held:
    """Live calls of ours-pg for a stage: SIP calls rung through the simulator and
    accepted (a session, its sideband to the simulator), each with a client WebSocket
    open as the caller's page keeps; errors counted by kind."""

    def __init__(self, ours: Ours, sim: str) -> None:
        self.ours, self.sim = ours, sim
        self.errors: dict[str, int] = {}
        self.session_ids: list[str] = []
        self.call_ids: list[str] = []
        self.sockets: list = []
        self.messages = 0
        self.sem = asyncio.Semaphore(20)

    def error(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1

    async def ring(self, n: int) -> None:
        from asgiref.sync import sync_to_async

        from sessions_app.models import VoiceSession

        async def one() -> str | None:
            async with self.sem:
                try:
                    answer = await self.ours.http.post(
                        f"{self.sim}/_control/webhook",
                        json={
                            "type": "realtime.call.incoming",
                            "url": f"{self.ours.url}/webhook/openai",
                        },
                        headers={"Authorization": f"Bearer {SIM_KEY}"},
                    )
                    if answer.json().get("status") == 200:
                        return answer.json()["call_id"]
                    self.error(f"ring {answer.json().get('status') or answer.json().get('error')}")
                except httpx.HTTPError as exc:
                    self.error(f"ring {type(exc).__name__}")
                return None

        self.call_ids = [c for c in await asyncio.gather(*(one() for _ in range(n))) if c]

        def sessions_of(ids):
            return list(
                VoiceSession.objects.filter(call_id__in=ids, status="active").values_list(
                    "pk", flat=True
                )
            )

        self.session_ids = await sync_to_async(sessions_of)(self.call_ids)

    async def open_sockets(self) -> None:
        import websockets

        from sessions_app import tokens

        host = self.ours.url.removeprefix("http://")

        async def one(session_id: str):
            async with self.sem:
                try:
                    socket_ = await websockets.connect(
                        f"ws://{host}/ws/sessions/{session_id}/",
                        subprotocols=["voiceplatform.v1", f"bearer.{tokens.issue(session_id)}"],
                        origin=f"http://{host}",
                        open_timeout=20,
                    )
                except Exception as exc:
                    self.error(f"websocket {type(exc).__name__}")
                    return
                self.sockets.append(socket_)

                async def read():
                    with contextlib.suppress(Exception):
                        async for _ in socket_:
                            self.messages += 1

                asyncio.ensure_future(read())

        await asyncio.gather(*(one(s) for s in self.session_ids))

    async def attached(self, timeout: float) -> int:
        """Waits until every session's sideband is attached; how many are."""
        from sessions_app.models import VoiceSession

        deadline = time.monotonic() + timeout
        while True:
            count = await VoiceSession.objects.filter(
                pk__in=self.session_ids, sideband_connected=True
            ).acount()
            if count >= len(self.session_ids) or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.5)

    async def end(self) -> None:
        from sessions_app import tokens

        for socket_ in self.sockets:
            with contextlib.suppress(Exception):
                await socket_.close()

        async def one(session_id: str):
            async with self.sem:
                auth = {"Authorization": f"Bearer {tokens.issue(session_id)}"}
                try:
                    answer = await self.ours.http.post(
                        f"{self.ours.url}/session/{session_id}/end", headers=auth
                    )
                    if answer.status_code != 200:
                        self.error(f"end {answer.status_code}")
                except httpx.HTTPError:
                    self.error("end error")

        await asyncio.gather(*(one(s) for s in self.session_ids))


async def hold_sessions(ours: Ours, sim: str, n: int, plan: Plan, log) -> dict:
    """n calls held with sockets; every session relays a transcript event every
    event_every_seconds for hold_seconds. RSS per session, loop lag, CPU, errors."""
    from sessions_app import tokens

    http = ours.http
    await asyncio.sleep(1)
    rss_before = rss_kb(ours.pid)
    calls = Held(ours, sim)
    await calls.ring(n)
    await calls.open_sockets()
    await asyncio.sleep(2)  # sidebands attach
    rss_held = rss_kb(ours.pid)
    await ours.stats(reset=True)
    cpu = cpu_seconds(ours.pid)
    started = time.perf_counter()
    posted = {"events": 0}
    session_ids = calls.session_ids

    async def relay(index: int, session_id: str):
        auth = {"Authorization": f"Bearer {tokens.issue(session_id)}"}
        # Spread over the interval, as independent callers would be.
        await asyncio.sleep(plan.event_every_seconds * index / max(1, len(session_ids)))
        turn = 0
        while time.perf_counter() - started < plan.hold_seconds:
            turn += 1
            event = {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": f"item_bench_{turn}",
                "transcript": f"Turn {turn} of a benchmark conversation.",
            }
            try:
                answer = await http.post(
                    f"{ours.url}/session/{session_id}/events",
                    json={"events": [event]},
                    headers=auth,
                )
                if answer.status_code == 200:
                    posted["events"] += 1
                else:
                    calls.error(f"events {answer.status_code}")
            except httpx.HTTPError:
                calls.error("events error")
            await asyncio.sleep(plan.event_every_seconds)

    await asyncio.gather(*(relay(i, s) for i, s in enumerate(session_ids)))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(ours.pid) - cpu
    probe = await ours.stats()
    rss_end = rss_kb(ours.pid)
    await calls.end()
    held = len(calls.sockets)
    log(f"  {n} sessions: {held} held with sockets")
    return {
        "asked": n,
        "held": held,
        "rss_before_kb": rss_before,
        "rss_held_kb": rss_held,
        "rss_after_flow_kb": rss_end,
        "rss_per_session_kb": round((max(rss_held, rss_end) - rss_before) / max(1, held), 1),
        "cpu_percent": round(100 * cpu / wall, 1),
        "events_posted": posted["events"],
        "events_per_s": round(posted["events"] / wall, 1),
        "websocket_messages": calls.messages,
        "loop_lag_p50_ms": round(probe["lag_p50_ms"], 1),
        "loop_lag_p99_ms": round(probe["lag_p99_ms"], 1),
        "loop_lag_max_ms": round(probe["lag_max_ms"], 1),
        "full_gcs": probe["full_gcs"],
        "full_gc_max_ms": round(probe["full_gc_max_ms"], 1),
        "errors": calls.errors,
    }


async def hold_traffic(ours: Ours, sim: str, n: int, seconds: float, log) -> dict:
    """n calls held while each talks at a real conversation's pace on its sideband
    (the simulator's load mode: turns every few seconds, transcript deltas at speech
    rate, usage on every response, now and then a tool call that a Celery worker
    runs). Loop lag, CPU-seconds per call-minute, RSS per call, events the upstream
    sent that the server did not receive, transcript rows written."""
    from sessions_app.models import ConversationItem

    control = {"Authorization": f"Bearer {SIM_KEY}"}
    await asyncio.sleep(1)
    rss_before = rss_kb(ours.pid)
    left = await ours.stats()  # what the stages before left running in the process
    calls = Held(ours, sim)
    await calls.ring(n)
    await calls.open_sockets()
    attached = await calls.attached(timeout=60)
    sent_before = (await ours.http.get(f"{sim}/_control/traffic", headers=control)).json()
    received_before = (await ours.stats())["sideband_events"]
    await ours.stats(reset=True)
    cpu = cpu_seconds(ours.pid)
    started = time.perf_counter()
    begun = await ours.http.post(
        f"{sim}/_control/traffic",
        json={"seconds": seconds, "call_ids": calls.call_ids},
        headers=control,
    )
    talking = begun.json().get("started", 0)
    log(f"  {talking} calls talking for {seconds:g} s")
    rss_peak = 0
    while True:  # every call plays its last turn to its end
        await asyncio.sleep(1)
        rss_peak = max(rss_peak, rss_kb(ours.pid))
        sent = (await ours.http.get(f"{sim}/_control/traffic", headers=control)).json()
        if not sent["talking"] or time.perf_counter() - started > seconds + 60:
            break
    probe = await ours.stats()
    wall = time.perf_counter() - started
    cpu = cpu_seconds(ours.pid) - cpu
    # What is in flight arrives; then what was sent and what was received are compared.
    deadline = time.monotonic() + 15
    while True:
        received = (await ours.stats())["sideband_events"] - received_before
        delivered = sent["sideband_events_sent"] - sent_before["sideband_events_sent"]
        if received >= delivered or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
        sent = (await ours.http.get(f"{sim}/_control/traffic", headers=control)).json()
    items = ConversationItem.objects.filter(session_id__in=calls.session_ids)
    expected = sent["items"] - sent_before["items"]
    rows = rows_at_end = await items.acount()
    caught_up = time.monotonic()  # how long the transcript writer still needs
    while rows < expected and time.monotonic() - caught_up < 30:
        await asyncio.sleep(0.25)
        rows = await items.acount()
    caught_up = time.monotonic() - caught_up
    await calls.end()
    held = len(calls.session_ids)
    log(f"  {n} talking calls: {talking} talked for {wall:.0f} s")
    return {
        "asked": n,
        "held": held,
        "sidebands_attached": attached,
        "talking": talking,
        "seconds": round(wall, 1),
        "turns": sent["turns"] - sent_before["turns"],
        "tool_calls": sent["tool_calls"] - sent_before["tool_calls"],
        "events_sent": delivered,
        "events_received": received,
        "events_dropped": max(0, delivered - received),
        "events_per_s": round(received / wall, 1),
        "transcript_rows": rows,
        "transcript_rows_expected": expected,
        "transcript_rows_behind_at_end": max(0, expected - rows_at_end),
        "transcript_catch_up_s": round(caught_up, 2),
        "websocket_messages": calls.messages,
        "lag_ms": {"p50": round(probe["lag_p50_ms"], 1), "p99": round(probe["lag_p99_ms"], 1)},
        "lag_max_ms": round(probe["lag_max_ms"], 1),
        # The lag less the time the loop waited for a CPU that other processes had (the
        # simulator and this client share the machine): what the server's own work made.
        "own_lag_ms": {
            "p50": round(probe.get("own_lag_p50_ms", 0.0), 1),
            "p99": round(probe.get("own_lag_p99_ms", 0.0), 1),
        },
        "cpu_percent": round(100 * cpu / wall, 1),
        "cpu_s_per_call_minute": round(cpu / max(1, held) / (wall / 60), 4),
        "rss_per_call_kb": round((rss_peak - rss_before) / max(1, held), 1),
        "full_gcs": probe["full_gcs"],
        "full_gc_max_ms": round(probe["full_gc_max_ms"], 1),
        "slow_callbacks": probe.get("slow_callbacks", []),
        "slow_callback_ms": probe.get("slow_callback_ms", 0),
        "left_before": {key: left.get(key) for key in ("tasks", "sidebands_held")},
        "errors": calls.errors,
    }


# --- tools --------------------------------------------------------------------------
def start_worker(env: dict, logs: Path, concurrency: int) -> subprocess.Popen:
    name = f"bench{concurrency}"
    out = (logs / f"worker-{concurrency}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "voiceplatform",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def tool_dispatch(env: dict, logs: Path, plan: Plan, log) -> dict:
    """read_file of a tiny file: in-process, and through Celery + Redis (a real worker,
    the result back over the channel layer), as the web side submits and waits."""
    from asgiref.sync import sync_to_async

    from sessions_app.models import VoiceSession
    from tools_app import actions, policy, registry
    from tools_app.calls import ToolCall
    from tools_app.workspace import Workspace
    from voiceplatform.celery import app

    session = await VoiceSession.objects.acreate(
        model="gpt-realtime",
        voice="marin",
        expires_at="2100-01-01T00:00:00Z",
        tools=policy.definitions(["read_file"]),
    )
    workspace = await sync_to_async(Workspace.for_session)(session.pk)
    (workspace.root / "tiny.txt").write_text("x")
    arguments = {"file_path": "tiny.txt"}
    inprocess = []
    for _ in range(plan.tool_rounds):
        started = time.perf_counter()
        await registry.get("read_file").build(workspace).execute(arguments)
        inprocess.append((time.perf_counter() - started) * 1000)
    results: dict = {"inprocess": summary(inprocess), "celery": {}}
    counter = {"n": 0}

    stages: dict[str, list[float]] = {"submit": [], "pickup": [], "run": [], "back": []}

    async def one_call() -> float:
        counter["n"] += 1
        call = ToolCall(session, "read_file", f"bench_{os.getpid()}_{counter['n']}", arguments)
        started = time.perf_counter()
        execution, _ = await actions.submit(call, origin="client")
        submitted = time.perf_counter()
        execution = await actions.wait_for(execution, 30)
        done = time.perf_counter()
        if execution.status != "succeeded":  # failed, or still queued/running at 30 s
            raise RuntimeError(
                f"tool call {execution.status} after {done - started:.1f} s:"
                f" {execution.error or 'no error given'}"
            )
        # Where the time went: the row's own clock (this machine) for the worker's part.
        now = datetime.now(tz=UTC)
        stages["submit"].append((submitted - started) * 1000)
        stages["pickup"].append(
            (execution.started_at - execution.created_at).total_seconds() * 1000
        )
        stages["run"].append((execution.finished_at - execution.started_at).total_seconds() * 1000)
        stages["back"].append((now - execution.finished_at).total_seconds() * 1000)
        return (done - started) * 1000

    await sync_to_async(app.control.purge)()
    for workers in plan.tool_workers:
        worker = start_worker(env, logs, workers)
        try:
            deadline = time.monotonic() + 60
            while True:
                replies = await sync_to_async(app.control.ping)(timeout=0.5)
                if any(h.startswith(f"bench{workers}@") for r in replies or [] for h in r):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not answer a ping within 60 s")
            for _ in range(5):  # warm the pool's connections
                await one_call()
            for values in stages.values():
                values.clear()
            timings = [await one_call() for _ in range(plan.tool_rounds)]
            breakdown = {name: round(pct(values, 0.5), 2) for name, values in stages.items()}
            started = time.perf_counter()
            calls = 0

            async def caller(started=started):
                nonlocal calls
                while time.perf_counter() - started < 3:
                    await one_call()
                    calls += 1

            await asyncio.gather(*(caller() for _ in range(4 * workers)))
            rate = calls / (time.perf_counter() - started)
        except RuntimeError as exc:  # a call failed: say so, and keep the rest of the run
            results["celery"][workers] = {"failed": str(exc)[:200]}
            log(f"  tools through Celery with {workers} worker process(es): {exc}")
            continue
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        results["celery"][workers] = {
            **summary(timings),
            "calls_per_s": round(rate, 1),
            "p50_stages_ms": breakdown,
        }
        log(f"  tools through Celery with {workers} worker process(es): done")
    return results


# --- webhooks -----------------------------------------------------------------------
async def webhook_ingest(ours: Ours, count: int, secret: str) -> dict:
    """count signed events, one in five of them a redelivery of an earlier one, posted
    by 20 senders; verified and de-duplicated events per second."""
    from standardwebhooks.webhooks import Webhook

    signer = Webhook(secret)
    run = f"{os.getpid()}{int(time.time())}"
    deliveries = []
    for index in range(count):
        unique = index if index % 5 else max(0, index - 3)
        webhook_id = f"wh_bench_{run}_{unique}"
        now = datetime.now(tz=UTC)
        body = json.dumps(
            {
                "id": f"evt_{run}_{unique}",
                "object": "event",
                "type": "response.completed",
                "created_at": int(now.timestamp()),
                "data": {"id": f"resp_{unique}"},
            }
        )
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(msg_id=webhook_id, timestamp=now, data=body),
            "content-type": "application/json",
        }
        deliveries.append((body, headers))
    outcomes: dict[str, int] = {}
    queue = list(reversed(deliveries))

    async def sender():
        while queue:
            body, headers = queue.pop()
            try:
                answer = await ours.http.post(
                    f"{ours.url}/webhook/openai", content=body, headers=headers
                )
                key = answer.json().get("status", str(answer.status_code))
            except (httpx.HTTPError, ValueError):
                key = "error"
            outcomes[key] = outcomes.get(key, 0) + 1

    cpu = cpu_seconds(ours.pid)
    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(20)))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(ours.pid) - cpu
    verified = outcomes.get("accepted", 0) + outcomes.get("duplicate", 0)
    return {
        "sent": count,
        "outcomes": outcomes,
        "per_s": round(verified / wall, 1),
        "cpu_ms_per_event": round(1000 * cpu / max(1, count), 2),
    }


# --- the run ------------------------------------------------------------------------
def offer_sdp() -> str:
    from sessions_app.probe import offering_peer

    async def make():
        peer, _ = await offering_peer()
        sdp = peer.localDescription.sdp
        await peer.close()
        return sdp

    return asyncio.run(make())


def report_traffic(results: dict, out) -> None:
    out("\n== talking calls held by one process (ours-pg; a real conversation's pace) ==")
    out(
        f"{'calls':>6}{'held':>6}{'events/s':>10}{'dropped':>9}{'rows':>7}{'of':>7}"
        f"{'lag p50':>9}{'lag p99':>9}{'lag max':>9}{'CPU %':>7}{'CPU s/call-min':>16}"
        f"{'RSS/call KiB':>14}  errors"
    )
    for row in results["traffic"]:
        out(
            f"{row['asked']:>6}{row['held']:>6}{row['events_per_s']:>10.0f}"
            f"{row['events_dropped']:>9}{row['transcript_rows']:>7}"
            f"{row['transcript_rows_expected']:>7}{row['lag_ms']['p50']:>9.1f}"
            f"{row['lag_ms']['p99']:>9.1f}{row['lag_max_ms']:>9.1f}{row['cpu_percent']:>7.1f}"
            f"{row['cpu_s_per_call_minute']:>16.4f}{row['rss_per_call_kb']:>14.1f}"
            f"  {row['errors']}"
        )
    for row in results["traffic"]:
        slow = row.get("slow_callbacks") or []
        out(
            f"at {row['asked']} calls (left running before: {row.get('left_before', {})};"
            f" lag less CPU waits p50/p99 {row.get('own_lag_ms', {}).get('p50', 0.0):.1f}/"
            f"{row.get('own_lag_ms', {}).get('p99', 0.0):.1f} ms):"
            f" {row.get('full_gcs', 0)} full GCs"
            f" (longest {row.get('full_gc_max_ms', 0.0):.1f} ms); loop callbacks of"
            f" {row.get('slow_callback_ms', 0):g} ms or more, by total:" + ("" if slow else " none")
        )
        for seen in slow:
            out(
                f"  {seen['count']:>6} x {seen['what']:<60} {seen['total_ms']:>9.1f} ms"
                f" (longest {seen['max_ms']:.1f})"
            )


def report_latency(results: dict, plan: Plan, out) -> None:
    lat = results["latency"]
    names = ["simulator", "floor", "peer", "ours-pg", "ours-embedded"]
    out(f"\n== /session and /sdp ({results['meta']['database']}; one process each) ==")
    out(
        f"{'clients':>7} {'target':<14}{'session p50':>12}{'p95':>8}{'p99':>8}"
        f"{'sdp p50':>9}{'p95':>8}{'p99':>8}{'added s/sdp p50':>17}{'req/s':>8}"
        f"{'cpu ms/req':>11}{'err':>5}"
    )
    for clients in plan.clients:
        sim = lat[clients]["simulator"]
        for name in names:
            m = lat[clients][name]
            s, d = summary(m.session_ms), summary(m.sdp_ms)
            added = (
                f"{s['p50'] - pct(sim.session_ms, 0.5):+.1f}/{d['p50'] - pct(sim.sdp_ms, 0.5):+.1f}"
                if name != "simulator"
                else "-"
            )
            out(
                f"{clients:>7} {name:<14}{s['p50']:>12.1f}{s['p95']:>8.1f}{s['p99']:>8.1f}"
                f"{d['p50']:>9.1f}{d['p95']:>8.1f}{d['p99']:>8.1f}{added:>17}"
                f"{m.requests / max(m.wall, 1e-9):>8.0f}"
                f"{1000 * m.cpu / max(1, m.requests):>11.2f}{m.errors:>5}"
            )
    split = cpu_by_endpoint(results)
    if split:
        floor = split.get("floor")
        out("CPU ms per request at 1 client, by endpoint (/session timed alone; /sdp the rest):")
        for name, cpu in split.items():
            times = (
                f"  ({cpu['session'] / floor['session']:.1f}x / {cpu['sdp'] / floor['sdp']:.1f}x"
                " the floor's)"
                if floor and floor["session"] and floor["sdp"] and name != "floor"
                else ""
            )
            errors = f"  [{cpu['session_errors']} /session errors]" if cpu["session_errors"] else ""
            out(
                f"  {name:<14}/session {cpu['session']:>6.2f}   /sdp {cpu['sdp']:>6.2f}"
                f"{times}{errors}"
            )
    gc_stats = results.get("gc", {})
    if gc_stats:
        out(
            "full GCs in ours-pg during the latency runs: "
            f"{gc_stats.get('full_gcs')} (max {gc_stats.get('full_gc_max_ms', 0):.1f} ms), "
            f"{gc_stats.get('full_gcs_in_requests')} inside a request, "
            f"{gc_stats.get('full_gcs_over_20ms_in_requests')} of them over 20 ms"
        )


def report_held(results: dict, out) -> None:
    out("\n== live sessions held by one process (ours-pg) ==")
    out(
        f"{'asked':>6}{'held':>6}{'RSS/session KiB':>17}{'CPU %':>7}{'events/s':>10}"
        f"{'ws msgs':>9}{'lag p50':>9}{'lag p99':>9}{'lag max':>9}{'full GCs':>9}  errors"
    )
    for row in results["held"]:
        out(
            f"{row['asked']:>6}{row['held']:>6}{row['rss_per_session_kb']:>17.1f}"
            f"{row['cpu_percent']:>7.1f}{row['events_per_s']:>10.1f}"
            f"{row['websocket_messages']:>9}{row['loop_lag_p50_ms']:>9.1f}"
            f"{row['loop_lag_p99_ms']:>9.1f}{row['loop_lag_max_ms']:>9.1f}"
            f"{row.get('full_gcs', 0):>9}  {row['errors']}"
        )


def report_tools(results: dict, out) -> None:
    tools = results["tools"]
    out("\n== tool dispatch (read_file of a tiny file) ==")
    out(f"{'path':<28}{'p50 ms':>9}{'p95':>8}{'p99':>8}{'calls/s':>9}")
    t = tools["inprocess"]
    out(f"{'in-process':<28}{t['p50']:>9.2f}{t['p95']:>8.2f}{t['p99']:>8.2f}{'-':>9}")
    for workers, t in tools["celery"].items():
        label = f"celery+redis, {workers} worker(s)"
        if "failed" in t:
            out(f"{label:<28}failed: {t['failed']}")
            continue
        out(f"{label:<28}{t['p50']:>9.2f}{t['p95']:>8.2f}{t['p99']:>8.2f}{t['calls_per_s']:>9.1f}")
        if "p50_stages_ms" in t:
            stages = ", ".join(f"{k} {v:.1f}" for k, v in t["p50_stages_ms"].items())
            out(f"{'':<28}p50 by stage (ms): {stages}")


def report_webhooks(results: dict, out) -> None:
    w = results["webhooks"]
    out("\n== webhook ingest (ours-pg, 20 senders, 1 in 5 a redelivery) ==")
    out(f"{w['per_s']:.0f} verified events/s, {w['cpu_ms_per_event']} ms CPU each; {w['outcomes']}")


def report(results: dict, plan: Plan, out) -> None:
    """Every stage that ran, then the ones that failed and why."""
    sections = {
        "latency": lambda: report_latency(results, plan, out),
        "held": lambda: report_held(results, out),
        "traffic": lambda: report_traffic(results, out),
        "tools": lambda: report_tools(results, out),
        "webhooks": lambda: report_webhooks(results, out),
    }
    for name, section in sections.items():
        if name in results:
            section()
    for name, reason in results.get("failed", {}).items():
        out(f"\n== {name}: FAILED ({reason}) ==")


async def talking(ours: Ours, sim: str, plan: Plan, env: dict, logs: Path, log) -> list[dict]:
    worker = start_worker(env, logs, 1)  # runs the calls' tool calls
    try:
        return [await hold_traffic(ours, sim, n, plan.traffic_seconds, log) for n in plan.traffic]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


async def stage(results: dict, name: str, log, work) -> None:
    """Runs one stage (work: an async callable) into results[name]. A stage that fails is
    named in results["failed"] and the stages before and after it keep their figures."""
    log(name)
    try:
        results[name] = await work()
    except Exception as exc:
        log(f"{name} failed: {exc!r}")
        results.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"[:300]


async def measure_traffic(procs: dict, plan: Plan, env_pg: dict, logs: Path, log) -> dict:
    """The talking-calls stage alone (--traffic-only)."""
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    results: dict = {}
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        sim = procs["simulator"].url + "/simulator"
        ours_pg = Ours(http, procs["ours-pg"].pid, sim, procs["ours-pg"].url, "ours-pg")
        await stage(results, "traffic", log, lambda: talking(ours_pg, sim, plan, env_pg, logs, log))
    return results


async def measure(procs: dict, offer: str, plan: Plan, env_pg: dict, logs: Path, log) -> dict:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    results: dict = {}
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        sim = procs["simulator"].url + "/simulator"
        embedded = procs["ours-embedded"]
        ours_pg = Ours(http, procs["ours-pg"].pid, sim, procs["ours-pg"].url, "ours-pg")
        targets = [
            SimulatorAlone(http, procs["simulator"].pid, sim),
            Floor(http, procs["floor"].pid, sim, procs["floor"].url),
            Peer(http, procs["peer"].pid, sim, procs["peer"].url),
            ours_pg,
            Ours(http, embedded.pid, sim, embedded.url, "ours-embedded"),
        ]

        async def requests() -> dict:
            for target in targets:  # warming up
                await drive(target, offer, 2, 10, Measured())
            await ours_pg.stats(reset=True)
            lat = await latency(targets, offer, plan, log)
            results["gc"] = await ours_pg.stats()
            return lat

        async def held() -> list[dict]:
            return [await hold_sessions(ours_pg, sim, n, plan, log) for n in plan.held]

        secret = os.environ.get("SIMULATOR_WEBHOOK_SECRET") or (
            "whsec_c2ltdWxhdG9yLXdlYmhvb2stc2VjcmV0LWxvY2Fs"
        )
        await stage(results, "latency", log, requests)
        await stage(results, "held", log, held)
        await stage(results, "traffic", log, lambda: talking(ours_pg, sim, plan, env_pg, logs, log))
        await stage(
            results, "webhooks", log, lambda: webhook_ingest(ours_pg, plan.webhooks, secret)
        )
    await stage(results, "tools", log, lambda: tool_dispatch(env_pg, logs, plan, log))
    return results


def cpu_by_endpoint(results: dict) -> dict[str, dict[str, float]]:
    """CPU ms per /session and per /sdp of each target, at one client."""
    split = {}
    for name, m in results["latency"].get(1, {}).items():
        if (both := m.cpu_split()) is not None:
            split[name] = {
                "session": round(both[0], 2),
                "sdp": round(both[1], 2),
                "session_errors": m.alone.errors,
            }
    return split


def latency_json(results: dict, plan: Plan) -> dict:
    lat = results["latency"]

    def added(attr: str) -> dict:
        out = {}
        for clients in plan.clients:
            ours = getattr(lat[clients]["ours-pg"], attr)
            sim = getattr(lat[clients]["simulator"], attr)
            out[str(clients)] = {
                "p50": round(pct(ours, 0.5) - pct(sim, 0.5), 2),
                "p99": round(pct(ours, 0.99) - pct(sim, 0.99), 2),
            }
        return out

    def cpu(name: str) -> float:
        cpu = sum(lat[c][name].cpu for c in plan.clients)
        requests = sum(lat[c][name].requests for c in plan.clients)
        return round(1000 * cpu / max(1, requests), 2)

    targets = {}
    for clients in plan.clients:
        for name, m in lat[clients].items():
            targets.setdefault(name, {})[str(clients)] = {
                "session_ms": summary(m.session_ms),
                "sdp_ms": summary(m.sdp_ms),
                "requests_per_s": round(m.requests / max(m.wall, 1e-9), 1),
                "cpu_ms_per_request": round(1000 * m.cpu / max(1, m.requests), 2),
                "errors": m.errors,
            }
    return {
        "session_added_ms": added("session_ms"),
        "sdp_added_ms": added("sdp_ms"),
        "session_cpu_ms": cpu("ours-pg"),
        "embedded_cpu_ms": cpu("ours-embedded"),
        "floor_cpu_ms": cpu("floor"),
        "peer_cpu_ms": cpu("peer"),
        "cpu_ms_by_endpoint": cpu_by_endpoint(results),
        "targets": targets,
        "gc": results.get("gc", {}),
    }


def held_json(results: dict, plan: Plan) -> dict:
    biggest = max(results["held"], key=lambda row: row["asked"])
    return {
        "sessions_held": biggest["held"],
        "rss_per_session_kb": biggest["rss_per_session_kb"],
        "loop_lag_p99_ms": biggest["loop_lag_p99_ms"],
        "held": results["held"],
    }


def traffic_json(results: dict, plan: Plan) -> dict:
    busiest = max(results["traffic"], key=lambda row: row["asked"])
    return {
        "calls_held_traffic": busiest["held"],
        "lag_ms": busiest["lag_ms"],
        "cpu_s_per_call_minute": busiest["cpu_s_per_call_minute"],
        "rss_per_call_kb": busiest["rss_per_call_kb"],
        "events_dropped": sum(row["events_dropped"] for row in results["traffic"]),
        "traffic": results["traffic"],
    }


def tools_json(results: dict, plan: Plan) -> dict:
    tools = results["tools"]
    celery_one = tools["celery"][min(tools["celery"])]
    return {
        "tool_dispatch_ms": {"p50": celery_one.get("p50"), "p99": celery_one.get("p99")},
        "tool_inprocess_ms": tools["inprocess"]["p50"],
        "tools": {
            "inprocess": tools["inprocess"],
            "celery": {str(k): v for k, v in tools["celery"].items()},
        },
    }


def webhooks_json(results: dict, plan: Plan) -> dict:
    return {"webhooks_per_s": results["webhooks"]["per_s"], "webhooks": results["webhooks"]}


def as_json(results: dict, plan: Plan) -> dict:
    """The keys of every stage that ran; "failed" names the stages that did not."""
    stages = {
        "latency": latency_json,
        "held": held_json,
        "traffic": traffic_json,
        "tools": tools_json,
        "webhooks": webhooks_json,
    }
    out = {"meta": results["meta"]}
    for name, keys in stages.items():
        if name in results:
            out.update(keys(results, plan))
    if results.get("failed"):
        out["failed"] = results["failed"]
    return out


def traffic_only(procs, plan, env_pg, logs, log, args, began) -> int:
    measured = asyncio.run(measure_traffic(procs, plan, env_pg, logs, log))
    measured["meta"] = {
        "mode": "traffic",
        "cpus": os.cpu_count(),
        "seconds": round(time.monotonic() - began, 1),
    }
    lines: list[str] = []
    report(measured, plan, lines.append)
    print("\n".join(lines))
    if args.json:
        write_json(args.json, as_json(measured, plan))
    return 1 if measured.get("failed") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (under 2 minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    parser.add_argument(
        "--traffic-only",
        metavar="N[,N...]",
        help="only the talking-calls stage, holding these numbers of calls",
    )
    parser.add_argument("--seconds", type=float, help="how long the calls talk in that stage")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.traffic_only:
        plan = dataclasses.replace(
            plan, traffic=tuple(int(n) for n in args.traffic_only.split(","))
        )
    if args.seconds:
        plan = dataclasses.replace(plan, traffic_seconds=args.seconds)
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    var = Path(tempfile.mkdtemp(prefix="vp-bench-"))
    logs = var / "logs"
    logs.mkdir()
    log(f"logs and data under {var}")
    # This process submits tool calls as the web side does: PostgreSQL, Redis, a queue.
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "LOG_LEVEL": "WARNING",
            "VAR_DIR": str(var),
            "TOOL_WORKSPACE_ROOT": str(var / "workspaces"),
            # The tool stage runs 4 callers a worker on one session, thousands of calls:
            # the per-session caps on calls running and argument bytes are not measured.
            "TOOLS_MAX_RUNNING_PER_SESSION": "100",
            "TOOLS_MAX_RUNNING_PER_CALLER": "100",
            "TOOL_ARGUMENTS_MAX_BYTES_PER_SESSION": UNLIMITED,
            # Thousands of bench sessions run tools: as plain directories their workspaces
            # do not use up the host's mounted total (the tool stage's own session failed
            # with StorageFull after the talking calls took it).
            "TOOL_WORKSPACE_HARD_CAP": "0",
        }
    )
    ensure_database(database_url)
    sim_port, floor_port, peer_port, pg_port, embedded_port = (free_port() for _ in range(5))
    sim_root = f"http://127.0.0.1:{sim_port}"
    sim_url = sim_root + "/simulator"
    env_pg = server_env(var, sim_url, database_url=database_url, redis_url=redis_url)
    env_embedded = server_env(var / "embedded", sim_url, database_url="", redis_url="")
    (var / "embedded").mkdir()
    migrate(env_pg)
    migrate(env_embedded)
    import django

    django.setup()
    end_leftovers()
    offer = offer_sdp()
    procs: dict[str, Proc] = {}
    try:
        procs["simulator"] = start(
            "simulator",
            [sys.executable, "manage.py", "simulator", "--port", str(sim_port)],
            {**base_env(var), "DATABASE_URL": "", "REDIS_URL": "", "SIMULATOR_ENABLED": "1"},
            logs,
            sim_root,
            "/simulator/health/live",
        )
        procs["ours-pg"] = start(
            "ours-pg",
            daphne("bench.served:application", pg_port),
            env_pg,
            logs,
            f"http://127.0.0.1:{pg_port}",
            "/health/live",
        )
        if args.traffic_only:
            return traffic_only(procs, plan, env_pg, logs, log, args, began)
        procs["floor"] = start(
            "floor",
            daphne("bench.floor:app", floor_port),
            {**base_env(var), "FLOOR_UPSTREAM": sim_url, "FLOOR_API_KEY": SIM_KEY},
            logs,
            f"http://127.0.0.1:{floor_port}",
            "/health/live",
        )
        procs["peer"] = start(
            "peer",
            daphne("bench.peer:app", peer_port),
            {**base_env(var), "PEER_UPSTREAM": sim_url, "PEER_API_KEY": SIM_KEY},
            logs,
            f"http://127.0.0.1:{peer_port}",
            "/health/live",
        )
        procs["ours-embedded"] = start(
            "ours-embedded",
            daphne("bench.served:application", embedded_port),
            env_embedded,
            logs,
            f"http://127.0.0.1:{embedded_port}",
            "/health/live",
        )
        log("all started")
        measured = asyncio.run(measure(procs, offer, plan, env_pg, logs, log))
    finally:
        for proc in procs.values():
            proc.stop()
    measured["meta"] = {
        "mode": "quick" if args.quick else "full",
        "database": "PostgreSQL + Redis (ours-pg), SQLite in-process (ours-embedded)",
        "cpus": os.cpu_count(),
        "seconds": round(time.monotonic() - began, 1),
        "when": datetime.now(tz=UTC).isoformat(timespec="seconds"),
    }
    lines: list[str] = []
    report(measured, plan, lines.append)
    print("\n".join(lines))
    if args.json:
        write_json(args.json, as_json(measured, plan))
        log(f"wrote {args.json}")
    log("done")
    return 1 if measured.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
