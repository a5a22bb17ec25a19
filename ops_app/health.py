"""Runs the checks of what the service depends on (seed 7.4), django-health-check's
plugins (ops_app.health_checks). Each run is bounded (a hung dependency cannot hold a
probe past CHECK_TIMEOUT_SECONDS) and its answer is kept for FRESH_SECONDS, so probes
cannot overload the backends. The breakers are the exception: read every time (a Redis
GET), so every page and probe reports the state they are in at that moment."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass, field

import structlog
from health_check.base import HealthCheckResult
from health_check.exceptions import ServiceWarning

from ops_app import health_checks

log = structlog.get_logger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
FRESH_SECONDS = 2.0
OK, WARNING, FAILING, DISABLED = "ok", "warning", "failing", "disabled"
ALWAYS_FRESH = frozenset({"openai_breaker", "amplifier_breaker"})


@dataclass(frozen=True)
class Check:
    # ok | warning (works, but look) | failing | disabled (not configured: nothing to fail)
    status: str
    detail: str = ""
    ms: float = 0.0
    # The library's own result, for its other renderings (/health?format=openmetrics).
    result: HealthCheckResult | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status != FAILING

    def as_dict(self) -> dict:
        return {"status": self.status, "detail": self.detail, "ms": self.ms}


class _Tracked(concurrent.futures.Executor):
    """The pool, remembering the thread a check's run took: a check whose last run
    still hangs is not started again (a dependency that never answers cannot use up
    the pool)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def submit(self, fn, /, *args, **kwargs):
        future = _threads[self.name] = _pool.submit(fn, *args, **kwargs)
        return future


_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")
_threads: dict[str, concurrent.futures.Future] = {}


async def _run(name: str, plugin) -> Check:
    previous = _threads.get(name)
    if previous is not None and not previous.done():
        return Check(FAILING, "the last probe has not answered yet")
    try:
        result = await asyncio.wait_for(plugin.get_result(_Tracked(name)), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return Check(
            FAILING, f"no answer within {CHECK_TIMEOUT_SECONDS:g} s", CHECK_TIMEOUT_SECONDS * 1000
        )
    ms = round(result.time_taken * 1000, 1)
    found = getattr(plugin, "found", "")
    if result.error is None:
        return Check(OK, found, ms, result)
    # The library logged the failure; the message says what failed, never a host or user.
    status = WARNING if isinstance(result.error, ServiceWarning) else FAILING
    return Check(status, str(result.error.message)[:200], ms, result)


_cached: dict[str, tuple[float, Check]] = {}
_running: dict[str, asyncio.Future] = {}
# name -> callbacks run when that check answers ok after failing (or for the first time)
_recovery: dict[str, list] = {}


async def check(name: str, *, wait: bool = True) -> Check:
    """One check's answer. A fresh one (under FRESH_SECONDS) is reused; a stale one is
    returned at once while a new run starts in the background, so request paths never
    wait on a probe; only a first run is waited for (unless wait is off, then the
    dependency is taken to be there until the probe says otherwise)."""
    return await _check(name, health_checks.configured()[name], wait)


async def _check(name: str, make, wait: bool) -> Check:
    if make is None:
        return Check(DISABLED, "not used in this configuration")
    if name in ALWAYS_FRESH:
        return await _run(name, make())
    known = _cached.get(name)
    if known is not None and time.monotonic() - known[0] < FRESH_SECONDS:
        return known[1]
    running = _running.get(name)
    if running is None or running.done() or running.get_loop() is not asyncio.get_running_loop():
        running = asyncio.ensure_future(_run_and_keep(name, make()))
        _running[name] = running
    if known is not None:
        return known[1]
    if not wait:
        return Check(OK, "not probed yet")
    return await asyncio.shield(running)


async def _run_and_keep(name: str, plugin) -> Check:
    # Kept before the run counts as done: a caller that finds it done finds it kept
    # (a done-callback would run a moment later, and a second probe could start).
    answer = await _run(name, plugin)
    _note(name, answer)
    return answer


def _note(name: str, answer: Check) -> None:
    before = _cached.get(name)
    _cached[name] = (time.monotonic(), answer)
    was = before[1].status if before is not None else None
    if answer.status != was and (answer.status in (FAILING, WARNING) or was in (FAILING, WARNING)):
        log.warning("health_check_changed", check=name, status=answer.status, detail=answer.detail)
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


async def run_all(*, wait: bool = True, only: frozenset[str] | None = None) -> dict[str, Check]:
    """Every check by name. Without wait, what the last probes found (request paths);
    with only, checks outside it answer what they last found and start no probe."""
    plugins = health_checks.configured()
    results = await asyncio.gather(
        *(
            _check(name, make, wait) if only is None or name in only else _peek(name, make)
            for name, make in plugins.items()
        )
    )
    return dict(zip(plugins, results, strict=True))


async def _peek(name: str, make) -> Check:
    if make is None:
        return Check(DISABLED, "not used in this configuration")
    known = _cached.get(name)
    return known[1] if known is not None else Check(OK, "not probed yet")


def forget() -> None:
    """Drops the kept answers (between tests)."""
    _cached.clear()
    _running.clear()
    _threads.clear()
