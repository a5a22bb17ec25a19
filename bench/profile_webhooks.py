#!/usr/bin/env python
"""Where a webhook's time goes: signed events posted to POST /webhook/openai through
the ASGI application in this process (no HTTP client in between, signed beforehand),
one in five a redelivery as in bench/run.py's webhook_ingest, by --senders concurrent
senders. First a timed pass (process CPU per event, all threads), then a pass under
cProfile, one profiler per thread (the ORM runs on the request threads), each timing
its own thread's CPU, so waiting on PostgreSQL or Redis counts for nothing.

    python bench/profile_webhooks.py [--events 2000] [--senders 20] [--repeat 3]
                                     [--sort tottime] [--no-profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402


def deliveries(count: int, secret: str, tag: str) -> list[tuple[bytes, list]]:
    """count signed deliveries, every fifth a redelivery of one three before it."""
    from standardwebhooks.webhooks import Webhook

    signer = Webhook(secret)
    out = []
    for index in range(count):
        unique = index if index % 5 else max(0, index - 3)
        webhook_id = f"wh_profile_{tag}_{unique}"
        now = datetime.now(tz=UTC)
        body = json.dumps(
            {
                "id": f"evt_{tag}_{unique}",
                "object": "event",
                "type": "response.completed",
                "created_at": int(now.timestamp()),
                "data": {"id": f"resp_{unique}"},
            }
        ).encode()
        headers = [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"webhook-id", webhook_id.encode()),
            (b"webhook-timestamp", str(int(now.timestamp())).encode()),
            (
                b"webhook-signature",
                signer.sign(msg_id=webhook_id, timestamp=now, data=body.decode()).encode(),
            ),
        ]
        out.append((body, headers))
    return out


async def post(app, body: bytes, headers: list) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhook/openai",
        "raw_path": b"/webhook/openai",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status, chunks = 0, []

    async def receive():
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # the client stays connected
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def send_all(app, items: list, senders: int) -> Counter:
    queue = list(reversed(items))
    outcomes: Counter = Counter()

    async def sender():
        while queue:
            status, body = await post(app, *queue.pop())
            try:
                outcomes[json.loads(body).get("status") or f"http {status}"] += 1
            except ValueError:
                outcomes[f"http {status}"] += 1

    await asyncio.gather(*(sender() for _ in range(senders)))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (the best counts)")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--embedded", action="store_true", help="SQLite, no Redis")
    parser.add_argument("--no-profile", action="store_true", help="the timed pass only")
    parser.add_argument("--out", help="also save the raw profile here (pstats)")
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="vp-profile-"))
    database_url = "" if args.embedded else os.environ.get("DATABASE_URL", run.DEFAULT_DATABASE_URL)
    redis_url = "" if args.embedded else os.environ.get("REDIS_URL", run.DEFAULT_REDIS_URL)
    # The upstream is never called: these events are recorded, not acted on.
    env = run.server_env(
        var, "http://127.0.0.1:9/simulator", database_url=database_url, redis_url=redis_url
    )
    if database_url:
        run.ensure_database(database_url)
    run.migrate(env)
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings

    from voiceplatform.asgi import application, django_asgi_app

    secret = settings.OPENAI_WEBHOOK_SECRETS[0]
    tag = f"{os.getpid()}{int(time.time())}"
    warm = deliveries(100, secret, tag + "w")
    timed = [deliveries(args.events, secret, f"{tag}t{n}") for n in range(max(1, args.repeat))]
    profiled = deliveries(args.events, secret, tag + "p")

    async def passes():
        await send_all(application, warm, args.senders)
        per_event = []
        for items in timed:
            cpu, wall = time.process_time(), time.perf_counter()
            outcomes = await send_all(application, items, args.senders)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            per_event.append(1000 * cpu / args.events)
            print(
                f"{args.events} events by {args.senders} senders: {dict(outcomes)}:"
                f" CPU {per_event[-1]:.2f} ms/event, wall {args.events / wall:.0f} events/s"
            )
        best = min(per_event)
        # The least of the passes: other load on the machine only ever adds to it.
        print(
            f"CPU {best:.2f} ms/event at best of {len(per_event)} (all threads of this"
            f" process) -> {1000 / best:.0f} events/s per CPU-second"
        )
        if args.no_profile:
            return None
        # One profiler per request thread, and one on the event loop's.
        profilers = [cProfile.Profile(time.thread_time)]
        for executor in django_asgi_app._threads:
            profiler = cProfile.Profile(time.thread_time)
            executor.submit(profiler.enable).result()
            profilers.append(profiler)
        profilers[0].enable()
        await send_all(application, profiled, args.senders)
        profilers[0].disable()
        for executor, profiler in zip(django_asgi_app._threads, profilers[1:], strict=True):
            executor.submit(profiler.disable).result()
        return profilers

    profilers = asyncio.run(passes())
    if not profilers:
        return
    stats = pstats.Stats(profilers[0])
    for profiler in profilers[1:]:
        if profiler.getstats():
            stats.add(profiler)
    if args.out:
        stats.dump_stats(args.out)
    print(f"profile of {args.events} more events (loop thread + request threads):")
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.limit)


if __name__ == "__main__":
    main()
