"""Live checks of what the service depends on (seed 7.4): the database, Redis, the
Celery workers, both circuit breakers and file storage. Each check is bounded (a hung
dependency cannot hold a probe past CHECK_TIMEOUT_SECONDS) and its answer is kept for
FRESH_SECONDS, so probes cannot overload the backends."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connections

from ops_app import breakers
from voiceplatform.celery import app

CHECK_TIMEOUT_SECONDS = 2.0
FRESH_SECONDS = 2.0
OK, FAILING, DISABLED = "ok", "failing", "disabled"


@dataclass(frozen=True)
class Check:
    status: str  # ok | failing | disabled (not configured here: nothing to fail)
    detail: str = ""
    ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != FAILING

    def as_dict(self) -> dict:
        return asdict(self)


def _database() -> str:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # a pool thread must not keep a connection of its own
    return connection.vendor


def _redis() -> str:
    from django_redis import get_redis_connection

    get_redis_connection("default").ping()
    return "ping"


def _workers() -> str:
    """A Celery worker consuming our task queue answers (waits its whole timeout)."""
    queue = app.conf.task_default_queue
    replies = app.control.inspect(timeout=settings.WORKER_PING_TIMEOUT_SECONDS)
    consuming = replies.active_queues() or {}
    names = [
        name for name, queues in consuming.items() if any(q.get("name") == queue for q in queues)
    ]
    if not names:
        raise RuntimeError(f"no worker consumes the queue '{queue}'")
    return f"{len(names)} worker(s)"


def _storage() -> str:
    if isinstance(default_storage, FileSystemStorage):
        location = default_storage.location
        os.makedirs(location, exist_ok=True)
        if not os.access(location, os.W_OK):
            raise PermissionError(f"{location} is not writable")
        return "local"
    default_storage.exists("health-probe")
    return type(default_storage).__name__


def _breaker(name: str):
    def check() -> str:
        state = breakers.state_of(breakers.by_name(name))
        if state == "open":
            raise RuntimeError("open")
        return state

    return check


async def _run(probe) -> Check:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(
            sync_to_async(probe, thread_sensitive=False)(), CHECK_TIMEOUT_SECONDS
        )
        status = OK
    except TimeoutError:
        status, detail = FAILING, f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # any failure of the dependency is the answer
        status, detail = FAILING, f"{type(exc).__name__}: {exc}"[:200]
    return Check(status, str(detail), round((time.perf_counter() - started) * 1000, 1))


def _probes() -> dict:
    probes = {
        "database": _database,
        "redis": _redis if settings.REDIS_URL else None,
        "workers": None if app.conf.task_always_eager else _workers,
        "openai_breaker": _breaker("openai"),
        "amplifier_breaker": _breaker("amplifier"),
        "storage": _storage,
    }
    return probes


_cached: dict[str, tuple[float, Check]] = {}
_running: dict[str, asyncio.Future] = {}


async def check(name: str, *, wait: bool = True) -> Check:
    """One check's answer. A fresh one (under FRESH_SECONDS) is reused; a stale one is
    returned at once while a new run starts in the background, so request paths never
    wait on a probe; only a first run is waited for (unless wait is off, then the
    dependency is taken to be there until the probe says otherwise)."""
    probe = _probes()[name]
    if probe is None:
        return Check(DISABLED, "in-process in this configuration")
    known = _cached.get(name)
    if known is not None and time.monotonic() - known[0] < FRESH_SECONDS:
        return known[1]
    running = _running.get(name)
    if running is None or running.done() or running.get_loop() is not asyncio.get_running_loop():
        running = asyncio.ensure_future(_run(probe))
        running.add_done_callback(lambda done: _keep(name, done))
        _running[name] = running
    if known is not None:
        return known[1]
    if not wait:
        return Check(OK, "not probed yet")
    return await asyncio.shield(running)


def _keep(name: str, done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is None:
        _cached[name] = (time.monotonic(), done.result())


async def run_all() -> dict[str, Check]:
    names = list(_probes())
    results = await asyncio.gather(*(check(name) for name in names))
    return dict(zip(names, results, strict=True))


def forget() -> None:
    """Drops the kept answers (between tests)."""
    _cached.clear()
    _running.clear()
