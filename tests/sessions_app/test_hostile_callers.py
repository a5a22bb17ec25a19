"""What a hostile caller of the voice API tried, and what now stops it (while the same
door still works for a legitimate one)."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from ops_app.checks import production_settings
from sessions_app import tokens, transcripts
from sessions_app.models import ApiKey, ConversationItem, VoiceSession, WebhookEvent
from sessions_app.simulator import sign_webhook
from voiceplatform.api import client_network

pytestmark = pytest.mark.django_db(transaction=True)


async def _key(**fields) -> tuple[ApiKey, str]:
    key = ApiKey(name="client", **fields)
    raw = key.issue()
    await key.asave()
    return key, raw


async def test_a_key_that_belongs_to_a_user_gets_the_keys_tool_policy(api, simulator, settings):
    settings.TOOLS_FOR_API_KEYS = ["read_file"]
    settings.TOOLS_FOR_USERS = ["*"]
    owner = await User.objects.acreate(username="owner")
    _, raw = await _key(user=owner)

    response = await api.post(
        "/session", content_type="application/json", headers={"Authorization": f"Bearer {raw}"}
    )

    assert response.status_code == 201
    assert response.json()["tools"] == ["read_file"]
    session = await VoiceSession.objects.aget(pk=response.json()["session_id"])
    assert session.source == VoiceSession.Source.API and session.user_id == owner.pk


# --- transcript intake: bounded per session -------------------------------------------


async def _live_session(**fields) -> VoiceSession:
    return await VoiceSession.objects.acreate(
        status=VoiceSession.Status.ACTIVE,
        model="gpt-realtime",
        voice="marin",
        expires_at=timezone.now() + timedelta(minutes=15),
        **fields,
    )


def _turn(index: int, text: str) -> dict:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": f"item_{index}",
        "transcript": text,
    }


async def _relay(api, session: VoiceSession, events: list[dict]):
    return await api.post(
        f"/session/{session.pk}/events",
        {"events": events},
        content_type="application/json",
        headers={"Authorization": f"Bearer {tokens.issue(session.pk)}"},
    )


async def test_a_relay_cannot_store_more_items_than_the_sessions_quota(api, settings):
    settings.SESSION_TRANSCRIPT_MAX_ITEMS = 3
    session = await _live_session()

    statuses = [(await _relay(api, session, [_turn(n, "hi")])).status_code for n in range(5)]
    refused = await _relay(api, session, [_turn(9, "more")])

    assert statuses == [200, 200, 200, 409, 409]
    assert refused.json()["error"]["code"] == "transcript_full"
    assert await ConversationItem.objects.filter(session=session).acount() == 3


async def test_a_relay_cannot_store_more_text_than_the_sessions_quota(api, settings):
    settings.SESSION_TRANSCRIPT_MAX_CHARS = 100_000
    session = await _live_session()
    big = "x" * 90_000

    statuses = [(await _relay(api, session, [_turn(n, big)])).status_code for n in range(4)]

    assert statuses == [200, 200, 409, 409]


async def test_relay_posts_are_rate_limited_per_session(api, settings):
    settings.SESSION_EVENTS_PER_MINUTE = 3
    session, other = await _live_session(), await _live_session()

    statuses = [(await _relay(api, session, [])).status_code for _ in range(4)]
    limited = await _relay(api, session, [])
    elsewhere = await _relay(api, other, [])

    assert statuses == [200, 200, 200, 429]
    assert int(limited["Retry-After"]) >= 1
    assert elsewhere.status_code == 200


async def test_a_real_fifteen_minute_conversation_fits_the_default_quotas(api):
    session = await _live_session()
    sentence = "Could you tell me a little more about that, and what it means for my plans? "
    turns = [_turn(n, sentence * 4) for n in range(240)]  # a turn every 4 s for 16 minutes

    statuses = {
        (await _relay(api, session, turns[start : start + 4])).status_code
        for start in range(0, len(turns), 4)
    }

    assert statuses == {200}
    assert await ConversationItem.objects.filter(session=session).acount() == 240


# --- token usage a browser claims ------------------------------------------------------


def _usage(response_id: str, tokens_used: int) -> dict:
    return {
        "type": "response.done",
        "response": {
            "id": response_id,
            "usage": {"input_tokens": tokens_used, "output_tokens": 0, "total_tokens": tokens_used},
        },
    }


async def test_a_browser_cannot_claim_usage_once_the_server_held_the_sideband(api):
    session = await _live_session(sideband_seen_at=timezone.now(), sideband_connected=False)

    await _relay(api, session, [_usage("resp_1", 5000)])

    await session.arefresh_from_db()
    assert session.total_tokens == 0


async def test_usage_claimed_without_a_sideband_is_counted_but_capped(api):
    honest, greedy = await _live_session(), await _live_session()

    await _relay(api, honest, [_usage("resp_1", 1234)])
    await _relay(api, greedy, [_usage(f"resp_{n}", 10_000_000) for n in range(100)])

    await honest.arefresh_from_db()
    await greedy.arefresh_from_db()
    assert honest.total_tokens == 1234
    assert greedy.total_tokens == transcripts.CLIENT_TOKENS_PER_SESSION


# --- per-address limits and proxies --------------------------------------------------


def test_ipv6_addresses_count_by_their_64_and_ipv4_by_the_address():
    assert client_network("2001:db8:1:2::1") == client_network("2001:db8:1:2:ffff::9")
    assert client_network("2001:db8:1:2::1") != client_network("2001:db8:1:3::1")
    assert client_network("203.0.113.7") == "203.0.113.7"
    assert client_network("::ffff:203.0.113.7") == "203.0.113.7"


async def test_an_ipv6_client_cannot_rotate_within_its_64_to_dodge_the_limit(
    api, simulator, settings
):
    settings.USE_X_FORWARDED_FOR = True
    settings.SESSION_RATE_LIMIT_PER_IP = 2

    async def create(address: str) -> int:
        response = await api.post(
            "/session", content_type="application/json", headers={"X-Forwarded-For": address}
        )
        return response.status_code

    rotating = [await create(f"2001:db8:1:2::{n}") for n in range(1, 4)]
    neighbour = await create("2001:db8:1:3::1")

    assert rotating == [201, 201, 429]
    assert neighbour == 201


def test_the_deploy_check_warns_when_client_addresses_are_not_taken_from_the_proxy(settings):
    settings.USE_X_FORWARDED_FOR = False
    warned = {problem.id for problem in production_settings(None)}
    settings.USE_X_FORWARDED_FOR = True
    trusted = {problem.id for problem in production_settings(None)}

    assert "ops_app.W005" in warned and "ops_app.W005" not in trusted


# --- webhook ids ---------------------------------------------------------------------


async def test_long_webhook_ids_sharing_a_prefix_are_not_duplicates(api, settings):
    secret = "whsec_" + base64.b64encode(b"a-webhook-secret-for-this-test").decode()
    settings.OPENAI_WEBHOOK_SECRETS = [secret]
    prefix = "wh_" + "x" * 200
    event = {"id": "evt", "object": "event", "type": "realtime.call.ended", "created_at": 1}

    async def deliver(webhook_id: str):
        body = json.dumps(event)
        headers = sign_webhook(secret, webhook_id, int(time.time()), body)
        headers.pop("content-type")
        return await api.post(
            "/webhook/openai", body, content_type="application/json", headers=headers
        )

    first, second, again = (
        await deliver(prefix + "-1"),
        await deliver(prefix + "-2"),
        await deliver(prefix + "-1"),
    )

    assert [r.json()["status"] for r in (first, second, again)] == [
        "accepted",
        "accepted",
        "duplicate",
    ]
    stored = [event.webhook_id async for event in WebhookEvent.objects.order_by("pk")]
    assert stored == [prefix + "-1", prefix + "-2"]
