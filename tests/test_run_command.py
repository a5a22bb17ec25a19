"""The README's run command serves the whole flow over real HTTP and WebRTC: in the
embedded default (SQLite, in-process everything, simulator mounted at /simulator) and
with PostgreSQL and Redis."""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest
from django.db import connection

from sessions_app.models import ConversationItem, VoiceSession
from sessions_app.probe import open_call
from tests.support import ROOT, database_env, eventually, free_port, start_server, stop_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["embedded", "postgres"])
def live_server_env(request, tmp_path):
    port = free_port()
    env = {
        "PORT": str(port),
        "VAR_DIR": str(tmp_path / "var"),
        "SIMULATOR_SPEECH_AFTER_SECONDS": "0.5",
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        # Periodic work often enough to watch it happen.
        "SESSION_EXPIRY_SWEEP_SECONDS": "1",
        "SESSION_CONNECT_GRACE_SECONDS": "8",
    }
    if request.param == "embedded":
        env |= {"DATABASE_URL": "", "REDIS_URL": "", "OPENAI_API_KEY": ""}
    else:
        env |= {**database_env(connection.settings_dict), "OPENAI_API_KEY": ""}
    process = start_server(
        ["bash", str(ROOT / "scripts/run.sh")], port, env, tmp_path / "server.log"
    )
    yield request.param, f"http://127.0.0.1:{port}", tmp_path / "var"
    stop_server(process)


async def test_the_run_command_serves_a_whole_conversation(live_server_env):
    kind, url, var = live_server_env
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        call = await open_call(http)
        call.say("Tell me a joke")
        await call.wait_for(
            lambda e: (
                e["type"] == "response.output_audio_transcript.done" and "joke" in e["transcript"]
            )
        )
        ended = await http.post(
            call.session["urls"]["end"],
            headers={"Authorization": f"Bearer {call.session['session_token']}"},
        )
        await call.close()
        # A SIP call rings: the simulator signs a webhook and delivers it to us over HTTP.
        ring = await http.post(
            "/simulator/_control/webhook",
            json={"type": "realtime.call.incoming", "url": f"{url}/webhook/openai"},
            headers={"Authorization": "Bearer sk-sim-local"},
        )

    session_id = call.session["session_id"]
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert ring.json()["status"] == 200
    if kind == "postgres":
        items = [
            (i.role, i.text) async for i in ConversationItem.objects.filter(session_id=session_id)
        ]
        session = await VoiceSession.objects.aget(pk=session_id)
        sip = await VoiceSession.objects.aget(call_id=ring.json()["call_id"])
        assert sip.source == "sip" and sip.status == "active"
    else:
        db = sqlite3.connect(var / "db.sqlite3")
        items = db.execute(
            "SELECT role, text FROM sessions_app_conversationitem "
            "WHERE session_id = ? ORDER BY created_at, id",
            (session_id,),
        ).fetchall()
        status, exported = db.execute(
            "SELECT status, transcript_json FROM sessions_app_voicesession WHERE id = ?",
            (session_id,),
        ).fetchone()
        assert status == "ended"
        assert json.loads((var / "media" / exported).read_text())[-1]["text"].startswith("You said")
        session = None
    assert ("user", "Tell me a joke") in items
    assert ("assistant", "You said: Tell me a joke. This is the voiceplatform simulator.") in items
    if session is not None:
        assert session.status == "ended" and session.total_tokens > 0
        assert session.duration_seconds and session.duration_seconds < 60


async def test_an_abandoned_session_expires_on_its_own(live_server_env):
    kind, url, var = live_server_env
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        created = await http.post("/session", json={})  # and the tab is closed: no offer
    session_id = created.json()["session_id"]

    async def status() -> str:
        if kind == "postgres":
            return (await VoiceSession.objects.aget(pk=session_id)).status
        with sqlite3.connect(var / "db.sqlite3") as db:
            query = "SELECT status FROM sessions_app_voicesession WHERE id = ?"
            return db.execute(query, (session_id,)).fetchone()[0]

    async def expired():
        return await status() == "expired"

    assert created.status_code == 201
    # The schedule: the server's own thread (embedded) or the worker's beat (Redis).
    assert await eventually(expired, timeout=45)
