#!/usr/bin/env python
"""Latency of /session and /sdp against the simulator, and of the simulator alone, in
one run. Starts the run command on a free port (embedded default unless DATABASE_URL /
REDIS_URL are set), then times N rounds over real HTTP with real aiortc offers.

    .venv/bin/python scripts/bench_latency.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def offer():
    from sessions_app.probe import offering_peer

    peer, _ = await offering_peer()
    return peer


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def bench(base: str, rounds: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {
        k: [] for k in ("POST /session", "POST /sdp", "sim client_secrets", "sim calls")
    }
    sim_key = {"Authorization": "Bearer sk-sim-local"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for _ in range(rounds):
            started = time.perf_counter()
            created = await http.post("/session", json={})
            timings["POST /session"].append(time.perf_counter() - started)
            session = created.json()
            peer = await offer()
            started = time.perf_counter()
            answer = await http.post(
                "/sdp",
                content=peer.localDescription.sdp,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {session['session_token']}",
                },
            )
            timings["POST /sdp"].append(time.perf_counter() - started)
            assert answer.status_code == 201, answer.text
            await http.post(
                session["urls"]["end"],
                headers={"Authorization": f"Bearer {session['session_token']}"},
            )
            await peer.close()

            started = time.perf_counter()
            secret = await http.post(
                "/simulator/v1/realtime/client_secrets",
                headers=sim_key,
                json={"session": {"type": "realtime"}},
            )
            timings["sim client_secrets"].append(time.perf_counter() - started)
            peer = await offer()
            started = time.perf_counter()
            call = await http.post(
                "/simulator/v1/realtime/calls",
                content=peer.localDescription.sdp,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {secret.json()['value']}",
                },
            )
            timings["sim calls"].append(time.perf_counter() - started)
            assert call.status_code == 201
            call_id = call.headers["location"].rsplit("/", 1)[-1]
            await http.post(f"/simulator/v1/realtime/calls/{call_id}/hangup", headers=sim_key)
            await peer.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    port = free_port()
    var = tempfile.mkdtemp(prefix="vp-bench-")
    env = {
        **os.environ,
        "PORT": str(port),
        "VAR_DIR": var,
        "SESSION_RATE_LIMIT_PER_IP": "1000000",
        "SESSION_CAPACITY": "1000000",
        "SIMULATOR_SPEECH_AFTER_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        ["bash", str(ROOT / "scripts/run.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/health/live", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        timings = asyncio.run(bench(base, args.rounds))
    finally:
        server.terminate()
        server.wait(10)
    database = "postgresql" if os.environ.get("DATABASE_URL") else "sqlite (embedded)"
    print(f"{args.rounds} rounds, one daphne process, database {database}, loopback")
    print(f"{'operation':<22}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, values in timings.items():
        print(
            f"{name:<22}{pct(values, 0.5):>10.1f}{pct(values, 0.99):>10.1f}"
            f"{statistics.mean(values) * 1000:>10.1f}"
        )


if __name__ == "__main__":
    main()
