"""Refusals a stranger can repeat as fast as they like (a tool the policy refuses, a bad
webhook signature, a rate limit) are audited once per source and window, so an attack
leaves one row, not one per request; and no audit row can be changed or removed."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import DatabaseError, transaction
from django.utils import timezone

from ops_app.models import AuditEvent
from sessions_app import tokens
from sessions_app.models import VoiceSession
from tools_app import policy

pytestmark = pytest.mark.django_db(transaction=True)

Action = AuditEvent.Action


async def live_session(tools: list[str]) -> VoiceSession:
    return await VoiceSession.objects.acreate(
        status=VoiceSession.Status.ACTIVE,
        model="gpt-realtime",
        voice="marin",
        expires_at=timezone.now() + timedelta(minutes=15),
        tools=policy.definitions(tools),
        client_ip="203.0.113.5",
    )


def bearer(session: VoiceSession) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.issue(session.pk)}"}


async def events(action: str) -> list[AuditEvent]:
    return [e async for e in AuditEvent.objects.filter(action=action).order_by("id")]


async def test_a_tool_refused_by_policy_is_recorded_once_however_often_it_is_called(api):
    session = await live_session(["read_file"])

    async def call(name: str, n: int):
        return await api.post(
            f"/tools/{name}",
            {"call_id": f"call_{n}", "arguments": {"command": "id"}},
            content_type="application/json",
            headers=bearer(session),
        )

    not_allowed = [(await call("bash", n)).status_code for n in range(25)]
    unknown = [(await call("no_such_tool", n)).status_code for n in range(25)]

    assert set(not_allowed) == {403} and set(unknown) == {404}
    refused = await events(Action.TOOL_REFUSED)
    assert [e.details for e in refused] == [
        {"tool": "bash", "call_id": "call_0", "code": "tool_not_allowed"},
        {"tool": "no_such_tool", "call_id": "call_0", "code": "unknown_tool"},
    ]
    assert {e.target for e in refused} == {f"session {session.pk}"}
    assert {e.ip for e in refused} == {"203.0.113.5"}


async def test_another_session_refused_the_same_tool_is_recorded_too(api):
    sessions = [await live_session([]), await live_session([])]

    for session in sessions:
        await api.post(
            "/tools/bash",
            {"call_id": "call_1", "arguments": {"command": "id"}},
            content_type="application/json",
            headers=bearer(session),
        )

    assert [e.target for e in await events(Action.TOOL_REFUSED)] == [
        f"session {s.pk}" for s in sessions
    ]


async def post_badly_signed_webhook(api, **headers):
    return await api.post(
        "/webhook/openai",
        '{"type": "realtime.call.incoming", "data": {}}',
        content_type="application/json",
        headers={
            "webhook-id": "wh_forged",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,Zm9yZ2VkLXNpZ25hdHVyZQ==",
            **headers,
        },
    )


async def test_webhook_signature_failures_are_recorded_once_per_sender_address(api, settings):
    settings.USE_X_FORWARDED_FOR = True

    first = [
        (await post_badly_signed_webhook(api, **{"X-Forwarded-For": "198.51.100.1"})).status_code
        for _ in range(30)
    ]
    other = await post_badly_signed_webhook(api, **{"X-Forwarded-For": "198.51.100.2"})

    assert set(first) == {400} and other.status_code == 400
    assert other.json()["error"]["code"] == "invalid_signature"
    refused = await events(Action.WEBHOOK_REFUSED)
    assert [e.ip for e in refused] == ["198.51.100.1", "198.51.100.2"]
    assert refused[0].details == {"code": "invalid_signature", "webhook_id": "wh_forged"}


async def test_fifty_rate_limited_requests_leave_one_event(api, settings):
    settings.SESSION_EVENTS_PER_MINUTE = 2
    session = await live_session([])

    statuses = [
        (
            await api.post(
                f"/session/{session.pk}/events",
                {"events": []},
                content_type="application/json",
                headers=bearer(session),
            )
        ).status_code
        for _ in range(52)
    ]

    assert statuses == [200, 200] + [429] * 50
    [event] = await events(Action.RATE_LIMITED)
    assert event.target == f"bucket events:{session.pk}"
    assert event.details == {"bucket": f"events:{session.pk}", "limit": 2, "window_seconds": 60}


def test_an_audit_event_cannot_be_changed_or_deleted_through_the_orm():
    event = AuditEvent.objects.create(action=Action.LOGIN, actor_name="someone")
    event.actor_name = "someone else"

    attempts = [
        event.save,
        event.delete,
        lambda: AuditEvent.objects.filter(pk=event.pk).update(target="elsewhere"),
        lambda: AuditEvent.objects.all().delete(),
    ]
    for attempt in attempts:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()

    stored = AuditEvent.objects.get()
    assert stored.actor_name == "someone" and stored.target == ""
