"""Shared fixtures: the simulator on its own port, real PostgreSQL and Redis, no
outside network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache

from tests import network_guard

network_guard.install()

ROOT = Path(__file__).resolve().parent.parent


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


def start_worker(name: str, env: dict[str, str], log: Path, concurrency: int = 1):
    """A real Celery worker process (its own process group, so it can be killed whole)."""
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


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:  # open WebSockets can hold daphne a while
        process.kill()
        process.wait()


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
        )
    wait_until_serving(f"http://127.0.0.1:{port}{live_path}", process)
    return process


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


@pytest.fixture(scope="session")
def simulator_process(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    process = start_server(
        [sys.executable, "manage.py", "simulator", "--port", str(port)],
        port,
        {"SIMULATOR_SPEECH_AFTER_SECONDS": "0.5", "DATABASE_URL": "", "REDIS_URL": ""},
        log,
        live_path="/simulator/health/live",
    )
    yield Simulator(f"http://127.0.0.1:{port}/simulator")
    stop_server(process)


@pytest.fixture
def simulator(simulator_process, settings):
    """A fresh simulator as our upstream for this test."""
    simulator_process.control("reset")
    settings.OPENAI_BASE_URL = simulator_process.url
    settings.OPENAI_API_KEY = ""
    yield simulator_process
    simulator_process.control("fault", {"mode": "off"})


@pytest.fixture(autouse=True)
def _clean_cache():
    # Rate-limit windows, usage dedupe keys, cached checks and counted slots; not the
    # whole Redis database, which a running Celery worker and the channel layer also use.
    for pattern in ("rl:*", "usage:*", "ops:*", "slots:*"):
        cache.delete_pattern(pattern)


@pytest.fixture(autouse=True)
async def _stop_sidebands():
    yield
    from sessions_app import sideband

    await sideband.detach_all()


@pytest.fixture
async def http():
    """httpx over our ASGI app in-process: what the probe (and a browser) sends."""
    from voiceplatform.asgi import application

    transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def eventually(check, timeout: float = 10.0):
    """Polls an async check until it returns something truthy."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


@pytest.fixture
def api():
    from django.test import AsyncClient

    return AsyncClient()


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup, django_db_blocker):
    """Async tests leave connections open in worker threads; close them so the test
    database can be dropped at the end."""
    yield
    from django.db import OperationalError, connection

    with django_db_blocker.unblock():
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        except OperationalError:
            pass  # no test used the database


@pytest.fixture
def search_provider():
    """A local web-search provider over HTTP on loopback: GET ?q= -> {"results": [...]}."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    class Provider(BaseHTTPRequestHandler):
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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/search"
    server.shutdown()
