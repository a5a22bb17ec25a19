#!/usr/bin/env python
"""Where a request's time goes: POST /session and POST /sdp run in this process,
through the ASGI application itself, under cProfile; the simulator is the upstream in
its own process. Prints the functions by own time and by cumulative time.

    python bench/profile_requests.py [--rounds 200] [--sort tottime] [--only sdp] [--timer cpu]
    python bench/profile_requests.py --cpu [--served] [--rounds 100]

--only sdp profiles the /sdp requests alone. --cpu runs no profiler: it prints the
CPU per /sdp request (the request itself, and the request with what it started in the
background, over the next BACKGROUND_SECONDS), and how much /sdp adds to the upstream's
own answer (the simulator timed directly, same offer): of this process, or with
--served of our server and of the bare passthrough (bench/floor.py), each under daphne
in a process of its own, as bench/run.py runs them (CPU read from /proc, in clock
ticks: compare means over many rounds).
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


async def served_rounds(procs: dict, offer: str, count: int, sim_root: str) -> dict:
    """cpu_rounds over HTTP against our server and the floor, round by round."""
    import httpx

    sim_auth = {"Authorization": f"Bearer {run.SIM_KEY}"}
    calls = f"{sim_root}/simulator/v1/realtime/calls"
    measured: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        measured.setdefault(name, []).append(value)

    async with httpx.AsyncClient(timeout=30) as http:

        async def timed_sdp(
            proc, url: str, token: str
        ) -> tuple[httpx.Response, float, float, float]:
            await asyncio.sleep(BACKGROUND_SECONDS)
            cpu, started = run.cpu_seconds(proc.pid), time.perf_counter()
            answer = await http.post(
                url + "/sdp",
                content=offer,
                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
            )
            took, used = time.perf_counter() - started, run.cpu_seconds(proc.pid) - cpu
            assert answer.status_code == 201, answer.text
            await asyncio.sleep(BACKGROUND_SECONDS)
            return answer, 1000 * took, 1000 * used, 1000 * (run.cpu_seconds(proc.pid) - cpu)

        for index in range(count + WARM_UP):
            ours, floor = procs["ours"], procs["floor"]
            created = (await http.post(ours.url + "/session", json={})).json()
            _, ours_ms, ours_cpu, ours_all = await timed_sdp(
                ours, ours.url, created["session_token"]
            )
            end = created["urls"]["end"]
            auth = {"Authorization": f"Bearer {created['session_token']}"}
            await http.post(ours.url + end, headers=auth)
            secret = (await http.post(floor.url + "/session")).json()
            answer, floor_ms, floor_cpu, floor_all = await timed_sdp(
                floor, floor.url, secret["value"]
            )
            call_id = answer.headers["x-call-id"]
            await http.post(
                f"{sim_root}/simulator/v1/realtime/calls/{call_id}/hangup", headers=sim_auth
            )
            secret = (
                await http.post(
                    f"{sim_root}/simulator/v1/realtime/client_secrets",
                    headers=sim_auth,
                    json={"session": {"type": "realtime", "model": "gpt-realtime"}},
                )
            ).json()
            started = time.perf_counter()
            direct = await http.post(
                calls,
                content=offer,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {secret['value']}",
                },
            )
            direct_ms = 1000 * (time.perf_counter() - started)
            call_id = direct.headers["location"].rsplit("/", 1)[-1]
            await http.post(
                f"{sim_root}/simulator/v1/realtime/calls/{call_id}/hangup", headers=sim_auth
            )
            if index >= WARM_UP:
                note("sdp_cpu_ms", ours_cpu)
                note("sdp_and_background_cpu_ms", ours_all)
                note("sdp_wall_ms", ours_ms)
                note("floor_sdp_cpu_ms", floor_cpu)
                note("floor_sdp_and_background_cpu_ms", floor_all)
                note("floor_sdp_wall_ms", floor_ms)
                note("upstream_wall_ms", direct_ms)
    return measured


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
    if "floor_sdp_wall_ms" in measured:
        added = statistics.median(measured["floor_sdp_wall_ms"]) - statistics.median(
            measured["upstream_wall_ms"]
        )
        print(f"{'floor /sdp added p50 (ms)':>28}: {added:7.2f}")
        for name in ("sdp_cpu_ms", "sdp_and_background_cpu_ms"):
            ratio = statistics.fmean(measured[name]) / statistics.fmean(measured["floor_" + name])
            print(f"{name + ' / floor':>28}: {ratio:7.2f}x (means)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--limit", type=int, default=45)
    parser.add_argument("--embedded", action="store_true", help="SQLite, no Redis")
    parser.add_argument("--out", help="also save the raw profile here (pstats)")
    parser.add_argument("--only", choices=("both", "sdp"), default="both")
    parser.add_argument(
        "--timer",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the event loop thread's CPU time (a busy machine's preemptions left out)",
    )
    parser.add_argument("--cpu", action="store_true", help="CPU and added ms, no profiler")
    parser.add_argument(
        "--served", action="store_true", help="with --cpu: our server and the floor under daphne"
    )
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
    procs = {"simulator": sim}
    try:
        import django

        django.setup()
        run.end_leftovers()
        offer = run.offer_sdp()
        profiler = cProfile.Profile(time.thread_time) if args.timer == "cpu" else cProfile.Profile()
        if args.cpu and args.served:
            for name, app in (("ours", "bench.served:application"), ("floor", "bench.floor:app")):
                served_port = run.free_port()
                procs[name] = run.start(
                    name,
                    run.daphne(app, served_port),
                    {
                        **env,
                        "FLOOR_UPSTREAM": sim_root + "/simulator",
                        "FLOOR_API_KEY": run.SIM_KEY,
                    },
                    var / "logs",
                    f"http://127.0.0.1:{served_port}",
                    "/health/live",
                )
            measured = asyncio.run(served_rounds(procs, offer, args.rounds, sim_root))
        elif args.cpu:
            from voiceplatform.asgi import application

            measured = asyncio.run(cpu_rounds(application, offer, args.rounds, sim_root))
        else:
            from voiceplatform.asgi import application

            asyncio.run(rounds(application, offer, args.rounds, profiler, args.only))
    finally:
        for proc in procs.values():
            proc.stop()
    if args.cpu:
        report(measured)
        return
    if args.out:
        profiler.dump_stats(args.out)
    stats = pstats.Stats(profiler)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.limit)


if __name__ == "__main__":
    main()
