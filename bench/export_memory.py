#!/usr/bin/env python
"""Memory of the admin's session export (sessions_app/export.py): for each number of
sessions, the export is consumed whole the way daphne sends it (the response's async
iterator), in JSON Lines and in CSV, and the peak of memory allocated meanwhile
(tracemalloc) and the growth of the process's peak RSS are printed. Streamed, neither
grows with the number of sessions. For comparison, a last line per size ("whole") reads
the same JSON Lines export whole before sending, as Django does under ASGI when a
streaming response is given a plain iterator.

Needs PostgreSQL (DATABASE_URL, by default a database of its own, vp_bench_export, made
if missing; its sessions are replaced on each run).

    .venv/bin/python bench/export_memory.py [--sizes 1000 10000] [--items 10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import tracemalloc
from datetime import timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vp_bench_export")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/7")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")
os.environ["DEBUG"] = "0"  # no query log kept in memory
os.environ["LOG_LEVEL"] = "WARNING"

BATCH = 500  # sessions written per round trip while filling the database


def make_database() -> None:
    import psycopg

    url = urlparse(os.environ["DATABASE_URL"])
    name = url.path.lstrip("/")
    admin_url = url._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not exists.fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def fill(count: int, items: int) -> bool:
    """count ended sessions, each with `items` transcript entries and one tool call;
    those of an earlier run are kept when they are just that. True when it wrote."""
    from django.db import connection
    from django.utils import timezone

    from sessions_app.models import ConversationItem, VoiceSession
    from tools_app.models import ToolExecution

    if (
        VoiceSession.objects.count() == count
        and ConversationItem.objects.count() == count * items
        and ToolExecution.objects.count() == count
    ):
        return False
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE sessions_app_voicesession CASCADE")
    start = timezone.now() - timedelta(days=1)
    for first in range(0, count, BATCH):
        sessions = VoiceSession.objects.bulk_create(
            VoiceSession(
                status="ended",
                source="api",
                model="gpt-realtime",
                voice="marin",
                instructions="Be brief and friendly; answer in the caller's language.",
                created_at=start + timedelta(seconds=n),
                expires_at=start + timedelta(seconds=n + 900),
                duration_seconds=42.0,
                end_reason="client",
                client_ip="198.51.100.7",
                input_tokens=1200,
                output_tokens=800,
                total_tokens=2000,
                tools=[{"type": "function", "name": "weather", "parameters": {}}],
            )
            for n in range(first, min(first + BATCH, count))
        )
        ConversationItem.objects.bulk_create(
            ConversationItem(
                session=session,
                item_id=f"item_{i}",
                role="user" if i % 2 == 0 else "assistant",
                status="completed",
                text=f"Turn {i}: what is the weather like in Lyon, and should I take an umbrella?",
                created_at=session.created_at + timedelta(seconds=i),
            )
            for session in sessions
            for i in range(items)
        )
        ToolExecution.objects.bulk_create(
            ToolExecution(
                session=session,
                call_id="call_1",
                tool="weather",
                arguments={"city": "Lyon"},
                origin="sideband",
                status="succeeded",
                output="sunny, 21 °C",
                duration_seconds=0.2,
            )
            for session in sessions
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would, so the planner knows the sizes
    gc.collect()
    return True


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak_rss() -> bool:
    """Linux: resets VmHWM to the current RSS (clear_refs 5); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def first(count: int):
    """The oldest `count` sessions, as the admin's filters would select them."""
    from sessions_app.models import VoiceSession

    cutoff = VoiceSession.objects.order_by("created_at").values_list("created_at", flat=True)
    return VoiceSession.objects.filter(created_at__lte=cutoff[count - 1])


async def consume(format_name: str, count: int, user) -> int:
    """The export's bytes, read as daphne reads them; returns how many there were."""
    from asgiref.sync import ThreadSensitiveContext, sync_to_async
    from django.test import AsyncRequestFactory

    from sessions_app import export

    request = AsyncRequestFactory().post(
        "/admin/sessions_app/voicesession/", {"select_across": "1"}
    )
    request.user = user
    size = 0
    async with ThreadSensitiveContext():
        response = await sync_to_async(
            lambda: export.download(request, first(count), format_name)
        )()
        async for block in response:
            size += len(block)
        await sync_to_async(response.close)()
    return size


def read_whole(count: int) -> int:
    """For comparison: the same JSON Lines export read whole before sending, as Django
    does under ASGI with a plain iterator."""
    from sessions_app import export

    return len(b"".join(list(export.jsonl_chunks(first(count)))))


def measure(run) -> tuple[float, float, float, float, int]:
    """(tracemalloc peak MiB, peak RSS growth MiB, seconds, CPU seconds, bytes) of run(),
    traced (so slower than untraced). One pass:
    the RSS includes tracing's own bookkeeping, which grows only with what is live."""
    gc.collect()
    before = rss_kib("VmRSS")
    reset_peak_rss()
    tracemalloc.start()
    started, cpu = time.perf_counter(), time.process_time()
    size = run()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = max(0, rss_kib("VmHWM") - before) / 1024
    return peak / 2**20, rss_growth, seconds, cpu, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--items", type=int, default=10, help="transcript entries a session")
    parser.add_argument("--no-comparison", action="store_true", help="skip the export read whole")
    args = parser.parse_args()
    make_database()
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from sessions_app import export

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="bench-export", is_staff=True)
    filled = time.perf_counter()
    if fill(max(args.sizes), args.items):
        print(f"filled the database with {max(args.sizes)} sessions ", end="")
        print(f"in {time.perf_counter() - filled:.1f} s")
    for format_name in export.FORMATS:  # warm-up: imports, connection, first allocations
        asyncio.run(consume(format_name, min(50, *args.sizes), user))
    print(
        f"chunk of {export.CHUNK_SIZE} sessions; {args.items} items + 1 tool call a session; "
        f"each size exports the oldest sessions; peak RSS reset: {reset_peak_rss()}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'sessions':>9} {'format':<7}{'MiB out':>9}{'seconds':>9}{'CPU s':>8}"
        f"{'tracemalloc peak MiB':>22}{'RSS growth MiB':>16}"
    )
    rows = [(count, name) for count in sorted(args.sizes) for name in export.FORMATS]
    if not args.no_comparison:
        rows += [(count, "whole") for count in sorted(args.sizes)]
    for count, name in rows:
        if name == "whole":
            run = partial(read_whole, count)
        else:
            run = partial(lambda name, count: asyncio.run(consume(name, count, user)), name, count)
        peak, rss, seconds, cpu, size = measure(run)
        note = "   <- read whole before sending, for comparison" if name == "whole" else ""
        print(
            f"{count:>9} {name:<7}{size / 2**20:>9.1f}{seconds:>9.1f}{cpu:>8.1f}"
            f"{peak:>22.2f}{rss:>16.1f}{note}"
        )


if __name__ == "__main__":
    main()
