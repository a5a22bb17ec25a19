"""Live checks of what the service depends on (seed 7.4): the database, Redis, the
Celery workers, both circuit breakers and file storage. Each check is bounded (a hung
dependency cannot hold a probe past CHECK_TIMEOUT_SECONDS) and its answer is kept for
FRESH_SECONDS, so probes cannot overload the backends."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from dataclasses import asdict, dataclass

import structlog
from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import OperationalError, connections

from ops_app import breakers
from voiceplatform import dbpool, outage
from voiceplatform.celery import app

log = structlog.get_logger(__name__)

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
    except OperationalError as exc:
        if dbpool.exhausted(exc):  # it answers every connection we hold: busy, not away
            return f"{connection.vendor} (every pooled connection in use)"
        raise
    finally:
        connection.close()  # a pool thread must not keep a connection of its own
    return connection.vendor


def _redis() -> str:
    """Pings Redis itself (not through the fallbacks), and tells them what it found:
    a probe that gets through ends an outage at once."""
    from django_redis import get_redis_connection

    try:
        get_redis_connection("default").ping()
    except Exception as exc:
        if outage.is_unreachable(exc):
            outage.redis.failed(exc)
        raise
    outage.redis.succeeded()
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


# Each probe runs on a thread of its own (a hung dependency holds it): one per check
# at a time, so a dependency that never answers cannot use up the thread pool.
_threads: dict[str, concurrent.futures.Future] = {}


async def _run(name: str, probe) -> Check:
    started = time.perf_counter()
    previous = _threads.get(name)
    if previous is not None and not previous.done():
        return Check(FAILING, "the last probe has not answered yet")
    thread = _threads[name] = _pool.submit(probe)
    try:
        detail = await asyncio.wait_for(asyncio.wrap_future(thread), CHECK_TIMEOUT_SECONDS)
        status = OK
    except TimeoutError:
        status, detail = FAILING, f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # any failure of the dependency is the answer
        # Only the kind on the public /health: the message may name hosts and users.
        log.warning("health_check_failed", check=name, error=str(exc)[:300])
        status, detail = FAILING, type(exc).__name__
    return Check(status, str(detail), round((time.perf_counter() - started) * 1000, 1))


_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")


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
# name -> callbacks run when that check answers ok after failing (or for the first time)
_recovery: dict[str, list] = {}


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
        running = asyncio.ensure_future(_run_and_keep(name, probe))
        _running[name] = running
    if known is not None:
        return known[1]
    if not wait:
        return Check(OK, "not probed yet")
    return await asyncio.shield(running)


async def _run_and_keep(name: str, probe) -> Check:
    # Kept before the run counts as done: a caller that finds it done finds it kept
    # (a done-callback would run a moment later, and a second probe could start).
    answer = await _run(name, probe)
    _note(name, answer)
    return answer


def _note(name: str, answer: Check) -> None:
    before = _cached.get(name)
    _cached[name] = (time.monotonic(), answer)
    if answer.ok and (before is None or not before[1].ok):
        for callback in _recovery.get(name, []):
            callback()


def report_failure(name: str, detail: str) -> None:
    """A request path saw the dependency fail: the level says so at once, without
    waiting for the next probe (which also decides when it is back)."""
    _note(name, Check(FAILING, detail[:200]))


def report_ok(name: str, detail: str) -> None:
    """A request path saw the dependency work: the level says so at once (and what
    waits for its recovery runs), without waiting for the next probe."""
    _note(name, Check(OK, detail[:200]))


def on_recovery(name: str, callback) -> None:
    """callback() runs (in the event loop, so it must not block) whenever the check
    answers ok after failing, and on its first ok answer in this process."""
    if callback not in _recovery.setdefault(name, []):
        _recovery[name].append(callback)


async def run_all() -> dict[str, Check]:
    names = list(_probes())
    results = await asyncio.gather(*(check(name) for name in names))
    return dict(zip(names, results, strict=True))


def forget() -> None:
    """Drops the kept answers (between tests)."""
    _cached.clear()
    _running.clear()
    _threads.clear()
