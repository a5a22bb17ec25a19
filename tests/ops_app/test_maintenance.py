"""Maintenance mode: one switch in the database, seen by every process within 2 s and
after a restart; while on, new work is refused with 503 and live work goes on."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from ops_app import actions, state
from ops_app.models import AuditEvent, OpsState
from sessions_app import tokens
from sessions_app.models import VoiceSession
from tests.support import ROOT, database_env, free_port, start_server, stop_server
from tools_app import policy

pytestmark = pytest.mark.django_db(transaction=True)


async def _session(status: str = "active") -> VoiceSession:
    return await VoiceSession.objects.acreate(
        status=status,
        model="gpt-realtime",
        voice="marin",
        expires_at=timezone.now() + timedelta(minutes=15),
        tools=policy.definitions(["bash"]),
    )


def _auth(session: VoiceSession) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.issue(session.pk)}"}


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        timeout=60,
    )


def _seconds_until(url: str, status: int, limit: float = 10.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if httpx.post(f"{url}/session", json={}, timeout=5).status_code == status:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"/session never answered {status}")


def test_a_switch_made_by_one_process_reaches_another_within_two_seconds_and_survives_a_restart(
    tmp_path,
):
    port = free_port()
    env = {
        **database_env(connection.settings_dict),
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        "OPENAI_API_KEY": "",
        "PORT": str(port),
        "VAR_DIR": str(tmp_path / "var"),
    }
    daphne = [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "voiceplatform.asgi:application",
    ]
    url = f"http://127.0.0.1:{port}"
    server = start_server(daphne, port, env, tmp_path / "server.log")
    try:
        assert httpx.post(f"{url}/session", json={}, timeout=10).status_code == 201
        _manage(
            "maintenance",
            "on",
            "--message",
            "Upgrading the database",
            "--eta",
            "14:30 UTC",
            env=env,
        )
        switched_on = _seconds_until(url, 503)
    finally:
        stop_server(server)
    server = start_server(daphne, port, env, tmp_path / "server-restarted.log")
    try:
        after_restart = httpx.post(f"{url}/session", json={}, timeout=10)
        page = httpx.get(url, timeout=10)
        _manage("maintenance", "off", env=env)
        switched_off = _seconds_until(url, 201)
    finally:
        stop_server(server)

    assert switched_on < 2.0 and switched_off < 2.0
    assert after_restart.status_code == 503
    assert after_restart.json()["error"]["code"] == "maintenance"
    assert int(after_restart.headers["Retry-After"]) > 0
    assert page.status_code == 503
    assert "Upgrading the database" in page.text and "14:30 UTC" in page.text


async def test_in_maintenance_new_work_is_refused_and_live_work_goes_on(api, simulator):
    live, fresh = await _session("active"), await _session("created")
    await actions.maintenance_on(actor="test", message="Back soon", eta="15:00 UTC")

    page = await api.get("/")
    new_session = await api.post("/session", content_type="application/json")
    offer = await api.post(
        "/sdp", "v=0\r\nm=audio 9 UDP 0\r\n", content_type="application/sdp", headers=_auth(fresh)
    )
    tool = await api.post(
        "/tools/bash",
        {"call_id": "c1", "arguments": {"command": "id"}},
        content_type="application/json",
        headers=_auth(live),
    )
    relayed = await api.post(
        f"/session/{live.pk}/events",
        {"events": [{"type": "input_audio_buffer.committed", "item_id": "i1"}]},
        content_type="application/json",
        headers=_auth(live),
    )
    recording = await api.post(
        f"/session/{live.pk}/recording",
        b"OggS" + b"\x00" * 60,
        content_type="audio/ogg",
        headers=_auth(live),
    )
    ended = await api.post(f"/session/{live.pk}/end", headers=_auth(live))
    alive = await api.get("/health/live")
    metrics = await api.get("/metrics")
    admin = await api.get("/admin/login/")

    assert page.status_code == 503 and b"Back soon" in page.content and b"15:00 UTC" in page.content
    for refused in (new_session, offer, tool):
        assert refused.status_code == 503, refused.content
        assert refused.json()["error"]["code"] == "maintenance"
        assert int(refused["Retry-After"]) > 0
    assert (relayed.status_code, recording.status_code, ended.status_code) == (200, 201, 200)
    assert (alive.status_code, metrics.status_code, admin.status_code) == (200, 200, 200)


async def test_a_refused_caller_reads_the_operators_message_and_when_it_is_back(api):
    # A page left open from before maintenance began has only the API's answer to show.
    await actions.maintenance_on(actor="test", message="Upgrading the database", eta="14:30 UTC")

    refused = await api.post("/session", content_type="application/json")

    assert refused.status_code == 503
    assert refused.json() == {
        "error": {
            "code": "maintenance",
            "message": "Service temporarily unavailable (maintenance): "
            "Upgrading the database. We expect it back at 14:30 UTC.",
        }
    }


async def test_a_free_text_eta_is_said_as_written_on_the_page_and_in_the_refusal(api):
    await actions.maintenance_on(actor="test", message="Moving house!", eta="in 10 minutes")

    page = (await api.get("/")).content.decode()
    refused = (await api.post("/session", content_type="application/json")).json()

    assert "Expected back: in 10 minutes." in page and "back at" not in page
    assert refused["error"]["message"].endswith("Moving house! Expected back: in 10 minutes.")


async def test_without_a_message_or_eta_the_page_and_the_refusal_say_the_defaults(api):
    await actions.maintenance_on(actor="test")

    page = (await api.get("/")).content.decode()
    refused = (await api.post("/session", content_type="application/json")).json()

    for said in (page, refused["error"]["message"]):
        assert "The voice assistant is down for maintenance." in said
        assert "Please try again in a few minutes." in said


@pytest.mark.parametrize(
    ("eta", "said"),
    [
        ("14:30 UTC", "We expect it back at 14:30 UTC."),
        ("9:05", "We expect it back at 9:05."),
        ("2:30 pm", "We expect it back at 2:30 pm."),
        ("3pm CET", "We expect it back at 3pm CET."),
        ("14:30 UTC+2", "We expect it back at 14:30 UTC+2."),
        ("2025-06-01T14:30Z", "We expect it back at 2025-06-01T14:30Z."),
        ("in 10 minutes", "Expected back: in 10 minutes."),
        ("tomorrow morning", "Expected back: tomorrow morning."),
        ("around 14:30 UTC", "Expected back: around 14:30 UTC."),
        ("soon!", "Expected back: soon!"),
        ("25:00", "Expected back: 25:00."),
    ],
)
def test_an_eta_that_is_a_time_is_said_as_back_at_and_free_text_as_written(eta, said):
    assert OpsState(maintenance=True, maintenance_eta=eta).expected_back() == said


async def test_live_sessions_finish_unless_the_operator_ends_them_now(simulator):
    first = await _session("active")
    await actions.maintenance_on(actor="test")
    await first.arefresh_from_db()
    await actions.maintenance_off(actor="test")
    second = await _session("active")

    ended = await actions.maintenance_on(actor="test", end_live=True)

    await second.arefresh_from_db()
    assert first.status == "active"
    assert ended == 2
    assert (second.status, second.end_reason) == ("ended", "maintenance")


async def test_each_operator_action_leaves_exactly_one_audit_event():
    await actions.maintenance_on(actor="ops-cli", message="m", eta="soon")
    await actions.maintenance_off(actor="ops-cli")
    await actions.force_level(actor="ops-cli", level=2, reason="worker upgrade", hours=1)
    await actions.release_level(actor="ops-cli")
    await actions.reset_breaker(actor="ops-cli", name="amplifier")

    recorded = [
        (event.action, event.actor_name, event.target)
        async for event in AuditEvent.objects.order_by("id")
    ]
    assert recorded == [
        ("maintenance_on", "ops-cli", "maintenance"),
        ("maintenance_off", "ops-cli", "maintenance"),
        ("level_forced", "ops-cli", "level 2"),
        ("level_released", "ops-cli", "level 2"),
        ("breaker_reset", "ops-cli", "breaker amplifier"),
    ]


async def test_a_forced_level_holds_until_it_expires(api, simulator):
    await actions.force_level(actor="test", level=2, reason="tool backend upgrade", hours=1)

    reduced = await api.post("/session", content_type="application/json")
    ops = await state.for_update()
    ops.forced_until = timezone.now() - timedelta(seconds=1)
    await ops.asave()
    state.forget()
    restored = await api.post("/session", content_type="application/json")

    assert reduced.json()["degradation_level"] == 2 and reduced.json()["tools"] == []
    assert restored.json()["degradation_level"] == 1 and restored.json()["tools"]


@pytest.mark.parametrize(
    ("level", "reason", "hours", "code"),
    [
        (4, "x", 1, "invalid_level"),
        (2, " ", 1, "invalid_reason"),
        (2, "x", 0, "invalid_hours"),
        (2, "x", 48, "invalid_hours"),
    ],
)
async def test_a_forced_level_needs_a_level_a_reason_and_a_bounded_time(level, reason, hours, code):
    from voiceplatform.errors import BadRequest

    with pytest.raises(BadRequest) as refused:
        await actions.force_level(actor="test", level=level, reason=reason, hours=hours)

    assert refused.value.code == code
    assert await AuditEvent.objects.acount() == 0


def test_the_command_switches_and_says_so(capsys):
    call_command("maintenance", "on", "--message", "m", "--eta", "soon")
    on = capsys.readouterr().out
    call_command("maintenance", "off")

    assert "maintenance on" in on
    assert [e.action for e in AuditEvent.objects.order_by("id")] == [
        "maintenance_on",
        "maintenance_off",
    ]
    assert AuditEvent.objects.first().actor_name.startswith("cli:")


def test_audit_rows_refuse_update_and_delete_on_postgresql():
    from django.db import DatabaseError, transaction

    event = AuditEvent.objects.create(action="login", actor_name="someone")

    for statement in (
        "UPDATE ops_app_auditevent SET actor_name = 'someone else' WHERE id = %s",
        "DELETE FROM ops_app_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [event.pk])

    event.refresh_from_db()
    assert event.actor_name == "someone"
