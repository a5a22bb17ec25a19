"""Shared fixtures: the simulator on its own port, real PostgreSQL and Redis, no
outside network."""

from __future__ import annotations

import sys
import threading
import time
from http.server import ThreadingHTTPServer

import httpx
import pytest
from django.core.cache import cache

from tests import network_guard
from tests.factories import (
    ApiKeyFactory,
    ConversationItemFactory,
    VoiceSessionFactory,
    async_create,
)
from tests.support import (
    OwnRedis,
    SearchProvider,
    Simulator,
    free_port,
    start_server,
    stop_server,
    unmount,
    workspace_mounts,
)

network_guard.install()


@pytest.fixture(scope="session", autouse=True)
def _flush_outlives_a_deadlock():
    """A transactional test's teardown empties every table with one TRUNCATE. Work the
    test started may still be finishing in another connection (a worker recording a
    tool run, the transcript writer); PostgreSQL then ends one of the two as a deadlock
    victim. When that is the TRUNCATE, it is tried again (the other side's transaction
    has gone on by then) rather than leaving the tables full for the next test."""
    from django.db import OperationalError
    from django.db.backends.base.operations import BaseDatabaseOperations

    flush = BaseDatabaseOperations.execute_sql_flush

    def retried(self, sql_list):
        for attempt in range(3):
            try:
                return flush(self, sql_list)
            except OperationalError as exc:
                if attempt == 2 or "deadlock detected" not in str(exc):
                    raise
                time.sleep(0.2)

    patch = pytest.MonkeyPatch()
    patch.setattr(BaseDatabaseOperations, "execute_sql_flush", retried)
    yield
    patch.undo()


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
    for pattern in ("rl:*", "usage:*", "ops:*", "audit:*", "slots:*", "journal:*", "claim:*"):
        cache.delete_pattern(pattern)
    # The operators' switches and the health checks as this process last saw them.
    from ops_app import breakers, health, state
    from voiceplatform import outage

    state.forget()
    health.forget()
    outage.redis.forget()
    for breaker in breakers.all_breakers().values():  # failures counted by earlier tests
        breakers.reset(breaker)


class _StoppedClock:
    """time.time() as it was when the test began."""

    def __init__(self) -> None:
        self.at = time.time()

    def time(self) -> float:
        return self.at


@pytest.fixture(autouse=True)
def _one_rate_window(monkeypatch):
    """Rate limits count in fixed windows (a minute): hits of one test that straddled
    a window's end would start counting again, and a 429 that was due would be a 201
    (a machine under load stretches a test across the minute now and then). In this
    process the limiter's clock stands still for the test, so its hits share a window."""
    from ops_app import ratelimit

    monkeypatch.setattr(ratelimit, "time", _StoppedClock())


@pytest.fixture(autouse=True)
def _unmount_workspaces(tmp_path_factory):
    """Workspaces are tmpfs mounts when the suite runs as root (tools_app.mounts): those
    a test made go with it, files and all, so none holds memory past it (only this
    run's: under this checkout's var/ or this run's temporary directory)."""
    from django.conf import settings

    ours = (str(settings.VAR_DIR) + "/", str(tmp_path_factory.getbasetemp()) + "/")
    before = workspace_mounts()
    yield
    for point in workspace_mounts() - before:
        if point.startswith(ours):
            unmount(point)


@pytest.fixture
def own_redis():
    """A redis-server of this test's own, on a free loopback port: one it may stop."""
    server = OwnRedis(free_port())
    server.start()
    yield server
    server.kill()


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


@pytest.fixture
def api():
    from django.test import AsyncClient

    return AsyncClient()


@pytest.fixture
def make_session():
    """``session = await make_session(status="active")``: a VoiceSession, in async tests."""
    return async_create(VoiceSessionFactory)


@pytest.fixture
def make_item():
    """``await make_item(session=session, text="hi")``: a ConversationItem, in async tests."""
    return async_create(ConversationItemFactory)


@pytest.fixture
def make_api_key():
    """``key = await make_api_key()``: an ApiKey whose raw key is key.raw, in async tests."""
    return async_create(ApiKeyFactory)


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
    server = ThreadingHTTPServer(("127.0.0.1", 0), SearchProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/search"
    server.shutdown()


@pytest.fixture
def real_celery(settings):
    """Tasks go to Redis for worker processes, as in production (the queues emptied
    before and after)."""
    from voiceplatform.celery import app as celery_app

    celery_app.conf.task_always_eager = False
    settings.CELERY_TASK_ALWAYS_EAGER = False
    celery_app.control.purge()
    yield
    celery_app.control.purge()
    celery_app.conf.task_always_eager = True
