"""The server as the benchmark runs it: voiceplatform.asgi.application, plus what the
benchmark reads from inside the process at GET /__bench/stats (event-loop lag, and
that lag less the time the loop's thread waited for a CPU another process had; full
garbage collections and how many of them landed while a request was in flight, events
received on sideband connections, and the event-loop callbacks that ran longest, by
what they run: where the lag comes from).
POST /__bench/reset starts a new window."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time

from prometheus_client import REGISTRY

from voiceplatform.asgi import application as product

LAG_INTERVAL = 0.05
# A callback that holds the loop this long is counted, by what it runs.
SLOW_CALLBACK_MS = 10.0


def _what(callback) -> str:
    """The coroutine a task step resumes, or the callback's own name."""
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return getattr(coro, "__qualname__", type(coro).__name__)
    return getattr(callback, "__qualname__", type(callback).__name__)


class Probe:
    def __init__(self) -> None:
        self.in_flight = 0
        self.sampler: asyncio.Task | None = None
        self._gc_started = 0.0
        self.reset()
        gc.callbacks.append(self._gc)

    def reset(self) -> None:
        self.lags: list[float] = []
        self.own_lags: list[float] = []
        self.full_gc_ms: list[float] = []
        self.full_gc_in_request_ms: list[float] = []
        self.slow: dict[str, list[float]] = {}  # what -> [count, total ms, max ms]

    def start(self) -> None:
        """In the served process, on its first request: lag sampled, callbacks timed
        (unless BENCH_TIME_CALLBACKS=0: the timing costs a little CPU per callback)."""
        self.sampler = asyncio.ensure_future(self.sample())
        if os.environ.get("BENCH_TIME_CALLBACKS", "1") != "0":
            self.time_callbacks()

    def time_callbacks(self) -> None:
        """Times the callbacks of the running loop (not other threads' loops)."""
        run = asyncio.Handle._run  # noqa: SLF001
        probe, loop = self, asyncio.get_running_loop()

        def timed(handle: asyncio.Handle) -> None:
            if handle._loop is not loop:  # noqa: SLF001
                run(handle)
                return
            callback = handle._callback  # noqa: SLF001 (a cancelled handle loses it)
            started = time.perf_counter()
            run(handle)
            took = (time.perf_counter() - started) * 1000
            if took >= SLOW_CALLBACK_MS:
                seen = probe.slow.setdefault(_what(callback), [0, 0.0, 0.0])
                seen[0] += 1
                seen[1] += took
                seen[2] = max(seen[2], took)

        asyncio.Handle._run = timed  # noqa: SLF001

    def _gc(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = (time.perf_counter() - self._gc_started) * 1000
        self.full_gc_ms.append(took)
        if self.in_flight:
            self.full_gc_in_request_ms.append(took)

    async def sample(self) -> None:
        stats = _schedstat()
        while True:
            started, waited = time.perf_counter(), _cpu_waited(stats)
            await asyncio.sleep(LAG_INTERVAL)
            lag = max(0.0, time.perf_counter() - started - LAG_INTERVAL)
            self.lags.append(lag * 1000)
            # Less the time the loop's thread was ready but had no CPU (another process
            # had it): the lag this process's own work made.
            self.own_lags.append(max(0.0, lag - (_cpu_waited(stats) - waited)) * 1000)
            del self.lags[:-20000], self.own_lags[:-20000]

    def stats(self) -> dict:
        from sessions_app import sideband  # once Django is set up

        lags = sorted(self.lags) or [0.0]
        own = sorted(self.own_lags) or [0.0]
        return {
            "lag_p50_ms": lags[len(lags) // 2],
            "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
            "lag_max_ms": lags[-1],
            "own_lag_p50_ms": own[len(own) // 2],
            "own_lag_p99_ms": own[min(len(own) - 1, int(len(own) * 0.99))],
            "full_gcs": len(self.full_gc_ms),
            "full_gc_max_ms": max(self.full_gc_ms, default=0.0),
            "full_gcs_in_requests": len(self.full_gc_in_request_ms),
            "full_gcs_over_20ms_in_requests": sum(1 for t in self.full_gc_in_request_ms if t > 20),
            "gc_frozen": gc.get_freeze_count(),
            "sideband_events": REGISTRY.get_sample_value("voice_sideband_events_total") or 0,
            # What a stage leaves behind for the next: tasks alive, sidebands still held.
            "tasks": len(asyncio.all_tasks()),
            "sidebands_held": len(sideband.held()),
            "gc_threshold": gc.get_threshold(),
            "slow_callback_ms": SLOW_CALLBACK_MS,
            "slow_callbacks": [
                {"what": what, "count": n, "total_ms": round(total, 1), "max_ms": round(most, 1)}
                for what, (n, total, most) in sorted(self.slow.items(), key=lambda kv: -kv[1][1])[
                    :8
                ]
            ],
        }


def _schedstat() -> str:
    """/proc's schedstat of the calling thread (Linux)."""
    return f"/proc/self/task/{threading.get_native_id()}/schedstat"


def _cpu_waited(path: str) -> float:
    """Seconds the thread has spent ready to run while other work had the CPU; 0
    where the kernel does not say."""
    try:
        with open(path) as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


PROBE = Probe()


async def application(scope, receive, send) -> None:
    if PROBE.sampler is None:
        PROBE.start()
    if scope["type"] == "http" and scope["path"].startswith("/__bench/"):
        if scope["path"] == "/__bench/reset":
            PROBE.reset()
        body = json.dumps(PROBE.stats()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] != "http":
        await product(scope, receive, send)
        return
    PROBE.in_flight += 1
    try:
        await product(scope, receive, send)
    finally:
        PROBE.in_flight -= 1
