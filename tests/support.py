"""Helpers for the tests: processes on free ports (servers, Celery workers), the simulator's
control endpoints, a local search provider, polling, and the browser's flags.

Fixtures live in conftest.py and import from here; test modules import from here too,
never from a conftest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import redis
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


# --- processes ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            # A liveness route answers 200; anything else means the wrong server or path.
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def embedded_env(port: int, var_dir: Path) -> dict[str, str]:
    """A server process in the embedded default (SQLite under var_dir, no Redis, the
    simulator mounted as the upstream), serving on port."""
    return {
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "OPENAI_API_KEY": "",
        "PORT": str(port),
        "VAR_DIR": str(var_dir),
    }


def database_env(db: dict) -> dict[str, str]:
    """What a server or worker process needs to use this run's PostgreSQL and Redis."""
    return {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        # These URLs replace any given as files (both set would stop the start).
        "DATABASE_URL_FILE": "",
        "REDIS_URL_FILE": "",
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }


# Messages a dead worker held come back within seconds, not minutes.
FAST_REDELIVERY = {
    "CELERY_VISIBILITY_TIMEOUT": "3",
    "CELERY_UNACKED_RESTORE_INTERVAL": "1",
    "CELERY_UNACKED_RESTORE_THROTTLE": "1",
    # A worker a test kills while it restores must not hold redelivery off for minutes.
    "CELERY_UNACKED_MUTEX_EXPIRE": "3",
}


def start_worker(
    name: str,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    settings_module: str = "voiceplatform.settings_test",
    concurrency: int = 1,
    fast_redelivery: bool = False,
) -> subprocess.Popen:
    """A real Celery worker process on this run's PostgreSQL and Redis (in its own process
    group, so it can be killed whole). env is laid over the rest; with fast_redelivery,
    what a worker killed mid-task held is redelivered within seconds."""
    from django.db import connection

    env = {
        **database_env(connection.settings_dict),
        "DJANGO_SETTINGS_MODULE": settings_module,
        **(FAST_REDELIVERY if fast_redelivery else {}),
        **(env or {}),
    }
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
            "--without-gossip",
            "--without-mingle",
            "-l",
            "info",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextlib.contextmanager
def worker_running(name: str, log: Path, **options):
    """A real Celery worker (start_worker's options) that answers pings, for the block;
    killed, whole, at its end."""
    process = start_worker(name, log, **options)
    try:
        wait_for_worker(name)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_worker(name: str, timeout: float = 30) -> None:
    """Until a Celery worker whose name starts with name answers a ping."""
    from voiceplatform.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        if any(host.startswith(f"{name}@") for reply in replies for host in reply):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the Celery worker {name} did not come up")


def start_server(
    args: list[str],
    port: int,
    env: dict[str, str],
    log: Path,
    live_path: str = "/health/live",
) -> subprocess.Popen:
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, so stop_server leaves no child behind
            preexec_fn=_interruptible,
        )
    wait_until_serving(f"http://127.0.0.1:{port}{live_path}", process)
    return process


def _interruptible() -> None:
    """Ctrl-C reaches the server as from a terminal, even when this run of the suite
    was started in the background, which ignores SIGINT for everything it starts (and a
    shell cannot trap a signal ignored when it started)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def daphne(port: int) -> list[str]:
    """The server command, as run.sh runs it, on a loopback port."""
    return [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "voiceplatform.asgi:application",
    ]


def stop_server(process: subprocess.Popen) -> None:
    """Stops the server and everything it started (run.sh's daphne and worker): the
    whole process group, killed if it has not gone within 5 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):  # open WebSockets hold daphne
        process.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class OwnRedis:
    """A redis-server this test starts, kills and starts again on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15.0
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


class CuttableProxy:
    """A TCP proxy on a free loopback port in front of a real server (the shared
    PostgreSQL): cut() makes that server unreachable through it (the listener and every
    open connection close), restore() listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> CuttableProxy:
        self.restore()
        return self

    def __exit__(self, *exc) -> None:
        self.cut()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            held, self._open = self._open, set()
        for sock in held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)


# --- services the tests talk to -----------------------------------------------------
class Simulator:
    """The simulator running in its own process, and its control endpoints."""

    key = "sk-sim-local"

    def __init__(self, url: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {self.key}"}

    def control(self, path: str, body: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/_control/{path}", json=body or {}, headers=self.headers)
        response.raise_for_status()
        return response.json()

    def fault(self, mode: str, **options) -> None:
        self.control("fault", {"mode": mode, **options})

    def call(self, call_id: str) -> dict:
        response = httpx.get(f"{self.url}/_control/calls/{call_id}", headers=self.headers)
        response.raise_for_status()
        return response.json()


class SearchProvider(BaseHTTPRequestHandler):
    """A web-search provider: GET ?q= -> {"results": [...]}, two results."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        query = parse_qs(urlsplit(self.path).query).get("q", [""])[0]
        body = json.dumps(
            {
                "results": [
                    {
                        "title": f"Result for {query}",
                        "url": "https://example.org/1",
                        "snippet": "first",
                    },
                    {"title": "Second", "url": "https://example.org/2", "snippet": "second"},
                ]
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class OtlpReceiver:
    """A trace collector on loopback: takes OTLP exports over HTTP (protobuf POSTs on
    /v1/traces) or gRPC (the TraceService), and keeps each span it was sent as a dict:
    name, kind, trace_id, span_id, parent_id (hex; "" for a root), attributes, service.
    Use it as a context manager; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self, protocol: str = "http/protobuf") -> None:
        self.protocol = protocol
        self.spans: list[dict] = []
        self._lock = threading.Lock()

    def __enter__(self) -> OtlpReceiver:
        if self.protocol == "grpc":
            self._start_grpc()
        else:
            self._start_http()
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def take(self, raw: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest.FromString(raw)
        taken = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _otlp_value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    taken.append(
                        {
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "attributes": {a.key: _otlp_value(a.value) for a in span.attributes},
                            "service": resource.get("service.name"),
                        }
                    )
        with self._lock:
            self.spans.extend(taken)

    def named(self, name: str) -> list[dict]:
        with self._lock:
            return [span for span in self.spans if span["name"] == name]

    def _start_http(self) -> None:
        from http.server import ThreadingHTTPServer

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.take(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{server.server_port}"
        self._stop = server.shutdown

    def _start_grpc(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import grpc
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 (the service's name)
                receiver.take(request.SerializeToString())
                return trace_service_pb2.ExportTraceServiceResponse()

        server = grpc.server(ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._stop = lambda: server.stop(grace=None)


def _otlp_value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


# --- async tests --------------------------------------------------------------------
async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Polls an async check until it returns something truthy, for timeout s at most:
    then returns its last (falsy) answer, for the caller to assert on with what it
    awaited. Never loops on: a check that hangs is the per-test timeout's."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def held(call, timeout: float = 30.0) -> None:
    """Waits until the server holds the call's sideband. A client that relays nothing
    (the probe) must, before the model may call a tool: the sideband attaches just
    after /sdp answers, and what is said before it attaches reaches only the client
    (the page relays it until it hears `sideband.attached`). On a loaded machine the
    probe's WebRTC can be up and talking first."""
    from sessions_app.models import VoiceSession

    session_id = call.session["session_id"]

    async def attached() -> bool:
        return await VoiceSession.objects.filter(pk=session_id, sideband_connected=True).aexists()

    assert await eventually(attached, timeout), (
        f"the server did not hold the sideband of session {session_id} within {timeout} s"
    )


# --- the browser --------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Lets the page offer loopback ICE candidates, so WebRTC stays on 127.0.0.1.
    "--allow-loopback-in-peer-connection",
]
FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


async def launch(driver, *extra: str):
    """Debian's Chromium through Playwright, in a fresh profile (context.profile_dir)."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    context = await driver.chromium.launch_persistent_context(
        profile, executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_FLAGS, *extra]
    )
    context.profile_dir = profile
    return context


async def sign_in(page, base: str, username: str, password: str, path: str) -> None:
    """Logs in through the admin's login page and lands on path."""
    await page.goto(f"{base}/admin/login/?next={path}")
    await page.fill("#id_username", username)
    await page.fill("#id_password", password)
    await page.click("input[type=submit]")
    await page.wait_for_url(f"{base}{path}")


def load_support_group() -> None:
    """The Support group, as its data migration makes it (transactional tests empty
    every table, so tests that need it make it again; idempotent)."""
    import importlib

    from django.apps import apps

    importlib.import_module("sessions_app.migrations.0010_support_group").make_group(apps, None)
    importlib.import_module("tools_app.migrations.0008_support_views_tasks").add_view_task(
        apps, None
    )


async def start_call(page) -> None:
    """Starts a call on the caller's page, until the assistant's first answer."""
    await page.click("#start")
    await page.wait_for_selector("#connection:text-is('Connected')", timeout=15_000)
    await page.wait_for_selector("#transcript li.assistant:not(.partial)")


async def say(page, text: str, answered: str, timeout: float = 30_000) -> None:
    """Types a turn on the caller's page, until an answer holding `answered` shows."""
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    await page.wait_for_selector(
        f"#transcript li.assistant:has-text({json.dumps(answered)})", timeout=timeout
    )


async def end_call(page) -> None:
    await page.click("#stop")
    await page.wait_for_selector("#connection:text-is('Conversation ended')")


def support_user(username: str, password: str):
    """A staff account in the Support group (made again first: see load_support_group)."""
    from django.contrib.auth.models import Group, User

    load_support_group()
    user = User.objects.create_user(username, password=password, is_staff=True)
    user.groups.add(Group.objects.get(name="Support"))
    return user


def page_problems(page) -> list[str]:
    """What goes wrong on a page from now on: its script errors, and what its console
    reports as an error (a script or style its content security policy refused
    included; a missing favicon not)."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and not message.location.get("url", "").endswith("/favicon.ico")
            and problems.append(message.text)
        ),
    )
    return problems


def load_checklists() -> None:
    """The deployment checklists, as their data migration loads them: transactional
    tests empty every table, so tests that need them load them again (idempotent)."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("ops_app.migrations.0004_seed_deployment_checklists")
    migration.load(apps, None)


def workspace_mounts() -> set[str]:
    """Mount points of the workspace tmpfs mounts (tools_app.mounts) on this host."""
    points = set()
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields, _, rest = line.partition(" - ")
            fstype, source = rest.split()[:2]
            if fstype == "tmpfs" and source == "workspace":
                points.add(fields.split()[4].replace("\\040", " "))
    return points


def unmount(point: str) -> None:
    subprocess.run(["umount", "-l", point], capture_output=True, check=False)
