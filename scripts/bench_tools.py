#!/usr/bin/env python
"""Tool dispatch overhead: a trivial tool through Celery + Redis (a real worker process,
results back over the channel layer) against the same tool called in-process, in one
run. Needs Redis and PostgreSQL (DATABASE_URL / REDIS_URL, or the local defaults).

    .venv/bin/python scripts/bench_tools.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vp_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/7")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")
os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
os.environ["LOG_LEVEL"] = "WARNING"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def run(rounds: int) -> dict[str, list[float]]:
    from asgiref.sync import sync_to_async

    from sessions_app.models import VoiceSession
    from tools_app import actions, policy, registry
    from tools_app.calls import ToolCall
    from tools_app.workspace import Workspace

    session = await VoiceSession.objects.acreate(
        model="gpt-realtime",
        voice="marin",
        expires_at="2100-01-01T00:00:00Z",
        tools=policy.definitions(["read_file"]),
    )
    workspace = await sync_to_async(Workspace.for_session)(session.pk)
    (workspace.root / "tiny.txt").write_text("x")
    arguments = {"file_path": "tiny.txt"}
    timings: dict[str, list[float]] = {"in-process": [], "celery+redis": []}
    for index in range(rounds):
        started = time.perf_counter()
        tool = registry.get("read_file").build(workspace)
        await tool.execute(arguments)
        timings["in-process"].append(time.perf_counter() - started)

        started = time.perf_counter()
        execution, _ = await actions.submit(
            ToolCall(session, "read_file", f"bench_{index}", arguments), origin="client"
        )
        execution = await actions.wait_for(execution, 30)
        timings["celery+redis"].append(time.perf_counter() - started)
        assert execution.status == "succeeded", execution.error
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", "CREATE DATABASE vp_bench"],
        capture_output=True,
        check=False,
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tools_app.sandbox import isolation
    from voiceplatform.celery import app

    app.control.purge()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "voiceplatform",
            "worker",
            "-P",
            "prefork",
            "-c",
            "1",
            "-n",
            "bench@%h",
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            if app.control.ping(timeout=0.5):
                break
        timings = asyncio.run(run(args.rounds))
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    print(f"{args.rounds} calls of read_file on a tiny file; bash isolation here: {isolation()}")
    print(f"{'path':<16}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, values in timings.items():
        print(
            f"{name:<16}{pct(values, 0.5):>10.2f}{pct(values, 0.99):>10.2f}"
            f"{statistics.mean(values) * 1000:>10.2f}"
        )


if __name__ == "__main__":
    main()
