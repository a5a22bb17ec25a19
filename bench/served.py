"""The server as the benchmark runs it: voiceplatform.asgi.application, plus what the
benchmark reads from inside the process at GET /__bench/stats (event-loop lag, full
garbage collections and how many of them landed while a request was in flight, events
received on sideband connections).
POST /__bench/reset starts a new window."""

from __future__ import annotations

import asyncio
import gc
import json
import time

from prometheus_client import REGISTRY

from voiceplatform.asgi import application as product

LAG_INTERVAL = 0.05


class Probe:
    def __init__(self) -> None:
        self.in_flight = 0
        self.sampler: asyncio.Task | None = None
        self._gc_started = 0.0
        self.reset()
        gc.callbacks.append(self._gc)

    def reset(self) -> None:
        self.lags: list[float] = []
        self.full_gc_ms: list[float] = []
        self.full_gc_in_request_ms: list[float] = []

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
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LAG_INTERVAL)
            self.lags.append(max(0.0, time.perf_counter() - started - LAG_INTERVAL) * 1000)
            del self.lags[:-20000]

    def stats(self) -> dict:
        lags = sorted(self.lags) or [0.0]
        return {
            "lag_p50_ms": lags[len(lags) // 2],
            "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
            "lag_max_ms": lags[-1],
            "full_gcs": len(self.full_gc_ms),
            "full_gc_max_ms": max(self.full_gc_ms, default=0.0),
            "full_gcs_in_requests": len(self.full_gc_in_request_ms),
            "full_gcs_over_20ms_in_requests": sum(1 for t in self.full_gc_in_request_ms if t > 20),
            "gc_frozen": gc.get_freeze_count(),
            "sideband_events": REGISTRY.get_sample_value("voice_sideband_events_total") or 0,
            "gc_threshold": gc.get_threshold(),
        }


PROBE = Probe()


async def application(scope, receive, send) -> None:
    if PROBE.sampler is None:
        PROBE.sampler = asyncio.ensure_future(PROBE.sample())
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
