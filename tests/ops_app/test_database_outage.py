"""Level 3 drill: PostgreSQL becomes unreachable under a running server. Conversations go
on (voice only), their history is buffered, and it is all written, in order and once,
when the database returns."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

import httpx
import pytest
from django.db import connection

from sessions_app import transcripts
from sessions_app.models import ConversationItem, VoiceSession
from sessions_app.probe import open_call
from tests.support import CuttableProxy, database_env, free_port, start_server, stop_server

pytestmark = pytest.mark.django_db(transaction=True)

WRITTEN_WITHIN_SECONDS = 30


@dataclass
class Conversation:
    """What the user saw while the database was away."""

    session: dict
    created: int
    connected: bool
    relayed: list[int]
    tool: httpx.Response
    ended: httpx.Response
    item_ids: list[str]  # in the order the call said them


def _until(check, timeout: float, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(every)


def _counts() -> tuple[int, int]:
    return VoiceSession.objects.count(), ConversationItem.objects.count()


def _item_ids_in(events: list[dict]) -> list[str]:
    ids: list[str] = []
    for event in events:
        found = transcripts.changes_for(event)
        if found and found[0] not in ids:
            ids.append(found[0])
    return ids


async def _converse(url: str) -> Conversation:
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        created = await http.post("/session", json={})
        assert created.status_code == 201, created.text
        session = created.json()
        call = await open_call(http, session=session)  # /sdp answered 201, WebRTC is up
        auth = {"Authorization": f"Bearer {session['session_token']}"}
        try:
            # The simulated user speaks first (its microphone), then types.
            await call.wait_for(lambda e: e["type"] == "response.done", timeout=20)
            call.say("What is the weather like?")
            await call.wait_for(
                lambda e: (
                    e["type"] == "response.done"
                    and sum(x["type"] == "response.done" for x in call.events) == 2
                ),
                timeout=20,
            )
            relayed = []
            for _ in range(2):  # the same events twice: still one item each
                answer = await http.post(
                    session["urls"]["events"], json={"events": call.events}, headers=auth
                )
                relayed.append(answer.status_code)
            tool = await http.post(
                "/tools/bash", json={"call_id": "c1", "arguments": {"command": "id"}}, headers=auth
            )
            ended = await http.post(session["urls"]["end"], headers=auth)
        finally:
            await call.close()
    return Conversation(
        session=session,
        created=created.status_code,
        connected=bool(call.call_id),
        relayed=relayed,
        tool=tool,
        ended=ended,
        item_ids=_item_ids_in(call.events),
    )


def test_with_the_database_away_conversations_go_on_and_their_history_is_written_on_its_return(
    tmp_path,
):
    db = connection.settings_dict
    with CuttableProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)) as proxy:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **database_env({**db, "HOST": "127.0.0.1", "PORT": proxy.port}),
            "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
            "CELERY_TASK_ALWAYS_EAGER": "1",
            "OPENAI_API_KEY": "",
            "PORT": str(port),
            "VAR_DIR": str(tmp_path / "var"),
        }
        daphne = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        server = start_server(
            [*daphne, "voiceplatform.asgi:application"], port, env, tmp_path / "server.log"
        )
        try:
            sessions_before, items_before = _counts()
            assert httpx.get(f"{url}/health", timeout=10).json()["level"] == 1

            proxy.cut()
            assert _until(lambda: httpx.get(f"{url}/health", timeout=10).json()["level"] == 3, 15)
            talk = asyncio.run(_converse(url))
            health_while_away = httpx.get(f"{url}/health", timeout=10).json()
            nothing_written_yet = _counts() == (sessions_before, items_before)

            proxy.restore()
            session_id = talk.session["session_id"]
            restored = time.monotonic()

            def history_written() -> bool:
                # What notices the database is back: the health probes (an orchestrator's,
                # here the drill's), or the periodic sweep.
                httpx.get(f"{url}/health", timeout=10)
                session = VoiceSession.objects.filter(pk=session_id).first()
                return (
                    session is not None
                    and session.status == VoiceSession.Status.ENDED
                    and ConversationItem.objects.filter(session_id=session_id).count()
                    == len(talk.item_ids)
                )

            written = _until(history_written, WRITTEN_WITHIN_SECONDS, every=0.5)
            written_after = time.monotonic() - restored
            # The replay that wrote it says the database is back: level 1 within moments.
            _until(lambda: httpx.get(f"{url}/health", timeout=10).json()["level"] == 1, 3)
            health_after = httpx.get(f"{url}/health", timeout=10).json()
        finally:
            stop_server(server)

    print(
        f"\nbefore: sessions={sessions_before} items={items_before}; after: {_counts()}; "
        f"said: 1 session, {len(talk.item_ids)} items; written {written_after:.1f} s "
        f"after the database returned; user saw /session {talk.created}, /sdp 201, "
        f"events {talk.relayed}, /tools {talk.tool.status_code}, end {talk.ended.status_code}"
    )
    assert talk.created == 201 and talk.session["degradation_level"] == 3
    assert talk.session["tools"] == []
    assert talk.connected
    assert talk.relayed == [200, 200]
    assert talk.tool.status_code == 503 and talk.tool.json()["error"]["code"] == "tools_unavailable"
    assert talk.ended.status_code == 200 and talk.ended.json()["status"] == "ended"
    assert health_while_away["status"] == "degraded" and health_while_away["level"] == 3
    assert nothing_written_yet
    assert len(talk.item_ids) == 4

    assert written, f"the history was not written within {WRITTEN_WITHIN_SECONDS} s"
    session = VoiceSession.objects.get(pk=session_id)
    assert (session.status, session.end_reason) == ("ended", "client")
    assert session.call_id and session.connected_at and session.ended_at
    assert session.degradation_level == 3
    items = list(ConversationItem.objects.filter(session_id=session_id))
    assert [item.item_id for item in items] == talk.item_ids
    assert [(item.role, item.status) for item in items] == [
        ("user", "completed"),
        ("assistant", "completed"),
        ("user", "completed"),
        ("assistant", "completed"),
    ]
    assert items[2].text == "What is the weather like?"
    assert _counts() == (sessions_before + 1, items_before + len(talk.item_ids))
    assert health_after["level"] == 1
