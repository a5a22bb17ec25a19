#!/usr/bin/env python
"""What a call's live view costs a web process per update at the end of a long call.

    python bench/live_view.py [--turns 360] [--tools 30] [--rounds 20]

A session as a 15-minute conversation leaves it (a turn every 2.5 s, a tool call every
30 s) is written to the database, then read and rendered as the live view's feed does
for each update (ops_app.live_call): the first time whole, then again and again with
nothing changed and with one new turn. Prints p50 / max milliseconds of each, and the
bytes of the timeline. Uses DATABASE_URL when set, else vp_bench (bench/run.py's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vp_bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")


def _call(turns: int, tools: int):
    from django.utils import timezone

    from sessions_app.models import ConversationItem, VoiceSession
    from tools_app.models import ToolExecution

    start = timezone.now() - timedelta(seconds=2.5 * turns)
    session = VoiceSession.objects.create(
        status="active",
        model="gpt-realtime",
        voice="marin",
        connected_at=start,
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    ConversationItem.objects.bulk_create(
        ConversationItem(
            session=session,
            item_id=f"item_{n}",
            role="user" if n % 2 == 0 else "assistant",
            text=" ".join(["words"] * 25),
            created_at=start + timedelta(seconds=2.5 * n),
        )
        for n in range(turns)
    )
    for n in range(tools):
        ToolExecution.objects.create(
            session=session,
            call_id=f"call_{n}",
            tool="bash",
            arguments={"command": "ls"},
            status="succeeded",
            output="a line of output\n" * 5,
        )
    return session


def _ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


async def _measure(session, rounds: int) -> None:
    from asgiref.sync import sync_to_async

    from ops_app import live_call
    from tests.factories import ConversationItemFactory

    renderer = live_call.Entries()
    timings: dict[str, list[float]] = {"first": [], "unchanged": [], "one new turn": []}
    for n in range(rounds):
        if n == 0:
            kind = "first"
        elif n % 2:
            kind = "unchanged"
        else:
            kind = "one new turn"
            await sync_to_async(ConversationItemFactory)(session=session, text="one more turn")
        started = time.perf_counter()
        call = await live_call.read(session.pk)
        rendered = renderer.render(call.entries)
        live_call.render_sections(call, can_end=True, can_cancel=True)
        timings[kind].append(time.perf_counter() - started)
    size = sum(len(html) for html in rendered.values())
    print(f"live view of a call with {len(rendered)} timeline entries ({size} bytes of HTML)")
    for kind, values in timings.items():
        print(f"  read and render, {kind}: {_ms(values)} ({len(values)} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=360)
    parser.add_argument("--tools", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    session = _call(args.turns, args.tools)
    try:
        asyncio.run(_measure(session, args.rounds))
    finally:
        session.delete()


if __name__ == "__main__":
    main()
