#!/usr/bin/env python
"""Where a request's time goes: POST /session and POST /sdp run in this process,
through the ASGI application itself, under cProfile; the simulator is the upstream in
its own process. Prints the functions by own time and by cumulative time.

    python bench/profile_requests.py [--rounds 200] [--sort tottime] [--session-only]
                                     [--timed 200] [--cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402


async def rounds(app, offer: str, count: int, profiler, *, sdp: bool = True) -> float:
    """count rounds (after 10 to warm up) of /session and, with sdp, /sdp; ending each
    session is not profiled. Returns this process's CPU seconds over the profiled part."""
    import httpx

    cpu = 0.0
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        for index in range(count + 10):
            started = time.process_time()
            if index >= 10:  # after warming up
                profiler.enable()
            created = await http.post("/session", json={})
            assert created.status_code == 201, created.text
            token = created.json()["session_token"]
            auth = {"Authorization": f"Bearer {token}"}
            if sdp:
                answer = await http.post(
                    "/sdp", content=offer, headers={"Content-Type": "application/sdp", **auth}
                )
                assert answer.status_code == 201, answer.text
            profiler.disable()
            if index >= 10:
                cpu += time.process_time() - started
            await http.post(created.json()["urls"]["end"], headers=auth)
    return cpu


class _NotProfiling:
    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--limit", type=int, default=45)
    parser.add_argument("--embedded", action="store_true", help="SQLite, no Redis")
    parser.add_argument("--out", help="also save the raw profile here (pstats)")
    parser.add_argument("--session-only", action="store_true", help="POST /session alone")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time functions by the process's CPU, not the wall clock (a busy machine)",
    )
    parser.add_argument(
        "--timed", type=int, default=0, help="first, this many rounds unprofiled: CPU per round"
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
    try:
        import django

        django.setup()
        run.end_leftovers()
        offer = run.offer_sdp()
        from voiceplatform.asgi import application

        sdp = not args.session_only
        if args.timed:
            # The profiler's own cost left out: what a round costs this process's CPU
            # (all its threads), with the ending of each session not counted.
            cpu = asyncio.run(rounds(application, offer, args.timed, _NotProfiling(), sdp=sdp))
            what = "/session" if args.session_only else "/session + /sdp"
            print(
                f"{what}: {1000 * cpu / args.timed:.2f} ms CPU a round ({args.timed} rounds;"
                " the in-process httpx client's own CPU included)"
            )
        profiler = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
        asyncio.run(rounds(application, offer, args.rounds, profiler, sdp=sdp))
    finally:
        sim.stop()
    if args.out:
        profiler.dump_stats(args.out)
    stats = pstats.Stats(profiler)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.limit)


if __name__ == "__main__":
    main()
