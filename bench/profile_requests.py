#!/usr/bin/env python
"""Where a request's time goes: POST /session and POST /sdp run in this process,
through the ASGI application itself, under cProfile; the simulator is the upstream in
its own process. Prints the functions by own time and by cumulative time.

    python bench/profile_requests.py [--rounds 200] [--sort tottime] [--only sdp]
    python bench/profile_requests.py --cpu [--rounds 100]

--only sdp profiles the /sdp requests alone. --cpu runs no profiler: it prints the
CPU of this process per /sdp request (the request itself, and the request with what
it started in the background, over the next BACKGROUND_SECONDS), and how much /sdp
adds to the upstream's own answer (the simulator timed directly, same offer).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402

WARM_UP = 10
# How long after /sdp's answer its background work (the sideband attaching) is counted.
BACKGROUND_SECONDS = 0.3


async def rounds(app, offer: str, count: int, profiler: cProfile.Profile, only: str) -> None:
    import httpx

    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        for index in range(count + WARM_UP):
            profiling = index >= WARM_UP
            if profiling and only == "both":
                profiler.enable()
            created = await http.post("/session", json={})
            assert created.status_code == 201, created.text
            token = created.json()["session_token"]
            auth = {"Authorization": f"Bearer {token}"}
            if profiling and only == "sdp":
                profiler.enable()
            answer = await http.post(
                "/sdp", content=offer, headers={"Content-Type": "application/sdp", **auth}
            )
            assert answer.status_code == 201, answer.text
            profiler.disable()
            await http.post(created.json()["urls"]["end"], headers=auth)
    profiler.disable()


async def cpu_rounds(app, offer: str, count: int, sim_root: str) -> dict:
    """Per /sdp: CPU ms of the request, CPU ms of it and its background work, wall ms;
    and wall ms of the same offer posted to the simulator directly."""
    import httpx

    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    request_cpu, total_cpu, wall, upstream = [], [], [], []
    sim_auth = {"Authorization": f"Bearer {run.SIM_KEY}"}
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http,
        httpx.AsyncClient(base_url=sim_root + "/simulator") as sim,
    ):
        for index in range(count + WARM_UP):
            created = await http.post("/session", json={})
            assert created.status_code == 201, created.text
            auth = {"Authorization": f"Bearer {created.json()['session_token']}"}
            await asyncio.sleep(BACKGROUND_SECONDS)  # /session's own background settles
            cpu, started = time.process_time(), time.perf_counter()
            answer = await http.post(
                "/sdp", content=offer, headers={"Content-Type": "application/sdp", **auth}
            )
            took, used = time.perf_counter() - started, time.process_time() - cpu
            assert answer.status_code == 201, answer.text
            await asyncio.sleep(BACKGROUND_SECONDS)
            everything = time.process_time() - cpu
            await http.post(created.json()["urls"]["end"], headers=auth)
            secret = await sim.post(
                "/v1/realtime/client_secrets",
                headers=sim_auth,
                json={"session": {"type": "realtime", "model": "gpt-realtime"}},
            )
            started = time.perf_counter()
            direct = await sim.post(
                "/v1/realtime/calls",
                content=offer,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {secret.json()['value']}",
                },
            )
            direct_ms = 1000 * (time.perf_counter() - started)
            call_id = direct.headers["location"].rsplit("/", 1)[-1]
            await sim.post(f"/v1/realtime/calls/{call_id}/hangup", headers=sim_auth)
            if index >= WARM_UP:
                request_cpu.append(1000 * used)
                total_cpu.append(1000 * everything)
                wall.append(1000 * took)
                upstream.append(direct_ms)
    return {
        "sdp_cpu_ms": request_cpu,
        "sdp_and_background_cpu_ms": total_cpu,
        "sdp_wall_ms": wall,
        "upstream_wall_ms": upstream,
    }


def report(measured: dict) -> None:
    for name, values in measured.items():
        print(
            f"{name:>28}: p50 {statistics.median(values):7.2f}  "
            f"mean {statistics.fmean(values):7.2f}  n {len(values)}"
        )
    added = statistics.median(measured["sdp_wall_ms"]) - statistics.median(
        measured["upstream_wall_ms"]
    )
    print(f"{'/sdp added p50 (ms)':>28}: {added:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--limit", type=int, default=45)
    parser.add_argument("--embedded", action="store_true", help="SQLite, no Redis")
    parser.add_argument("--out", help="also save the raw profile here (pstats)")
    parser.add_argument("--only", choices=("both", "sdp"), default="both")
    parser.add_argument("--cpu", action="store_true", help="CPU and added ms, no profiler")
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="vp-profile-"))
    port = run.free_port()
    sim_root = f"http://127.0.0.1:{port}"
    database_url = "" if args.embedded else os.environ.get("DATABASE_URL", run.DEFAULT_DATABASE_URL)
    redis_url = "" if args.embedded else os.environ.get("REDIS_URL", run.DEFAULT_REDIS_URL)
    env = run.server_env(
        var, sim_root + "/simulator", database_url=database_url, redis_url=redis_url
    )
    if database_url:
        run.ensure_database(database_url)
    run.migrate(env)
    os.environ.update(env)
    (var / "logs").mkdir()
    sim = run.start(
        "simulator",
        [sys.executable, "manage.py", "simulator", "--port", str(port)],
        {**run.base_env(var), "DATABASE_URL": "", "REDIS_URL": "", "SIMULATOR_ENABLED": "1"},
        var / "logs",
        sim_root,
        "/simulator/health/live",
    )
    try:
        import django

        django.setup()
        run.end_leftovers()
        offer = run.offer_sdp()
        from voiceplatform.asgi import application

        profiler = cProfile.Profile()
        if args.cpu:
            measured = asyncio.run(cpu_rounds(application, offer, args.rounds, sim_root))
        else:
            asyncio.run(rounds(application, offer, args.rounds, profiler, args.only))
    finally:
        sim.stop()
    if args.cpu:
        report(measured)
        return
    if args.out:
        profiler.dump_stats(args.out)
    stats = pstats.Stats(profiler)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.limit)


if __name__ == "__main__":
    main()
