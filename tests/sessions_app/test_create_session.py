"""POST /session: policy, attribution, validation, upstream failures."""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient

from sessions_app.models import VoiceSession
from tests.support import free_port

pytestmark = pytest.mark.django_db(transaction=True)


async def test_it_creates_a_session_with_an_ephemeral_secret_and_a_token(api, simulator):
    response = await api.post(
        "/session", {"voice": "cedar", "instructions": "Be terse."}, content_type="application/json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["session_id"].startswith("sess_")
    assert body["client_secret"]["value"].startswith("ek_sim_")
    assert body["client_secret"]["expires_at"] > 0
    assert body["session_token"]
    assert body["model"] == "gpt-realtime"
    assert body["degradation_level"] == 1
    assert body["tools"] == [
        "bash",
        "cancel_task",
        "delegate",
        "edit_file",
        "glob",
        "grep",
        "read_file",
        "task_status",
        "web_fetch",
        "web_search",
        "write_file",
    ]
    assert body["urls"] == {
        "sdp": "/sdp",
        "tools": "/tools/",
        "events": f"/session/{body['session_id']}/events",
        "end": f"/session/{body['session_id']}/end",
        "recording": f"/session/{body['session_id']}/recording",
        "ws": f"/ws/sessions/{body['session_id']}/",
    }
    assert response["X-Voice-Session-Id"] == body["session_id"]
    cookie = response.cookies["VOICE_AFFINITY"]
    assert cookie.value == "local"
    assert cookie["max-age"] == 900 and cookie["httponly"] and cookie["samesite"] == "Lax"
    session = await VoiceSession.objects.aget(pk=body["session_id"])
    assert session.voice == "cedar" and session.instructions == "Be terse."
    assert session.status == "created" and session.attribution == "anonymous"
    assert session.client_ip == "127.0.0.1"
    assert (session.expires_at - session.created_at).total_seconds() == 900


async def test_it_accepts_an_empty_body_and_uses_the_defaults(api, simulator):
    response = await api.post("/session", content_type="application/json")

    assert response.status_code == 201
    session = await VoiceSession.objects.aget(pk=response.json()["session_id"])
    assert session.voice == "marin" and session.instructions


async def test_it_answers_get_with_405(api, simulator):
    response = await api.get("/session")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response["Allow"] == "POST"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ('{"voice": "marin", "temperature": 1}', "application/json", 400, "unknown_field"),
        ('{"voice": ', "application/json", 400, "invalid_json"),
        ("[1, 2]", "application/json", 400, "invalid_json"),
        ('{"voice": "robot"}', "application/json", 400, "invalid_voice"),
        ('{"instructions": 42}', "application/json", 400, "invalid_instructions"),
        ('{"instructions": "' + "x" * 4001 + '"}', "application/json", 400, "invalid_instructions"),
        ("voice=marin", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ('{"instructions": "' + "x" * 300_000 + '"}', "application/json", 413, "payload_too_large"),
        (b'{"voice": "\xff"}', "application/json", 400, "invalid_json"),
    ],
)
async def test_it_rejects_bad_bodies_with_a_clear_error(
    api, simulator, body, content_type, status, code
):
    response = await api.post("/session", body, content_type=content_type)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert await VoiceSession.objects.acount() == 0


async def test_it_refuses_anonymous_callers_when_the_setting_forbids_them(api, simulator, settings):
    settings.SESSION_ALLOW_ANONYMOUS = False

    response = await api.post("/session", content_type="application/json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "login_required"


async def test_it_attributes_a_session_to_the_api_key_that_created_it(
    api, simulator, settings, make_api_key
):
    settings.SESSION_ALLOW_ANONYMOUS = False
    key = await make_api_key()

    response = await api.post(
        "/session", content_type="application/json", headers={"Authorization": f"Bearer {key.raw}"}
    )

    assert response.status_code == 201
    session = await VoiceSession.objects.aget(pk=response.json()["session_id"])
    assert session.api_key_id == key.pk and session.attribution == f"api_key:{key.pk}"
    assert session.source == VoiceSession.Source.API
    await key.arefresh_from_db()
    assert key.last_used_at is not None


async def test_it_refuses_a_revoked_or_unknown_api_key(api, simulator, make_api_key):
    key = await make_api_key(revoked_at="2026-01-01T00:00:00Z")

    revoked = await api.post(
        "/session", content_type="application/json", headers={"Authorization": f"Bearer {key.raw}"}
    )
    unknown = await api.post(
        "/session", content_type="application/json", headers={"Authorization": "Bearer vpk_nope"}
    )

    assert revoked.status_code == unknown.status_code == 401
    assert revoked.json()["error"]["code"] == "invalid_api_key"


async def test_a_logged_in_user_needs_the_csrf_token(simulator):
    user = await User.objects.acreate_user("ada", password="pw")
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)

    refused = await client.post("/session", content_type="application/json")
    page = await client.get("/admin/login/")  # any page that sets the CSRF cookie
    token = page.cookies["csrftoken"].value
    allowed = await client.post(
        "/session", content_type="application/json", headers={"X-CSRFToken": token}
    )

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    assert allowed.status_code == 201
    session = await VoiceSession.objects.aget(pk=allowed.json()["session_id"])
    assert session.user_id == user.pk


async def test_it_limits_sessions_per_client_ip(api, simulator, settings):
    settings.SESSION_RATE_LIMIT_PER_IP = 3

    statuses = [
        (await api.post("/session", content_type="application/json")).status_code for _ in range(3)
    ]
    limited = await api.post("/session", content_type="application/json")

    assert statuses == [201, 201, 201]
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 61
    assert limited.json()["error"]["code"] == "rate_limited"


async def test_it_answers_503_in_maintenance(api, simulator, settings):
    settings.MAINTENANCE_MODE = True

    response = await api.post("/session", content_type="application/json")

    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["error"]["code"] == "maintenance"


async def test_it_retries_a_transient_upstream_failure(api, simulator):
    simulator.fault("error", status=500, count=1)

    response = await api.post("/session", content_type="application/json")

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ({"mode": "error", "status": 500}, 502, "upstream_error"),
        ({"mode": "error", "status": 503}, 502, "upstream_error"),
        ({"mode": "rate_limit", "retry_after_ms": 1500}, 503, "upstream_rate_limited"),
        ({"mode": "error", "status": 401}, 502, "upstream_refused"),
    ],
)
async def test_it_maps_upstream_failures_without_leaking_them(
    api, simulator, settings, fault, status, code
):
    simulator.fault(**fault)

    response = await api.post("/session", content_type="application/json")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert int(response["Retry-After"]) >= 1
    assert simulator.key.encode() not in response.content  # our key
    assert b"The server had an error" not in response.content  # the upstream body
    assert await VoiceSession.objects.acount() == 0


async def test_it_answers_504_when_upstream_is_too_slow(api, simulator, settings):
    settings.OPENAI_TOTAL_TIMEOUT_SECONDS = 0.5
    simulator.fault("slow", delay=3)

    response = await api.post("/session", content_type="application/json")

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert response["Retry-After"]


async def test_it_answers_502_when_upstream_is_unreachable(api, settings):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/simulator"
    settings.OPENAI_MAX_RETRIES = 0

    response = await api.post("/session", content_type="application/json")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


async def test_it_accepts_a_post_without_a_body(api, simulator):
    response = await api.generic("POST", "/session", b"")

    assert response.status_code == 201


async def test_created_and_failed_sessions_are_counted_at_metrics(api, simulator):
    from prometheus_client import REGISTRY

    def count(status: str) -> float:
        value = REGISTRY.get_sample_value(
            "voice_session_created_total", {"region": "local", "status": status, "source": "web"}
        )
        return value or 0.0

    before_created, before_failed = count("created"), count("failed")
    await api.post("/session", content_type="application/json")
    simulator.fault("error", status=500)
    await api.post("/session", content_type="application/json")
    page = await api.get("/metrics")

    assert count("created") == before_created + 1
    assert count("failed") == before_failed + 1
    assert b"voice_openai_latency_seconds_bucket" in page.content


async def test_instructions_with_a_nul_character_are_400_before_any_upstream_call(api, simulator):
    response = await api.post(
        "/session", '{"instructions": "hi\\u0000"}', content_type="application/json"
    )

    assert response.status_code == 400
    assert await VoiceSession.objects.acount() == 0


async def test_a_garbled_forwarded_for_falls_back_to_the_peer_address(api, simulator, settings):
    settings.USE_X_FORWARDED_FOR = True

    response = await api.post(
        "/session", content_type="application/json", headers={"X-Forwarded-For": "not-an-ip, 1:2"}
    )

    assert response.status_code == 201
    session = await VoiceSession.objects.aget(pk=response.json()["session_id"])
    assert session.client_ip == "127.0.0.1"


async def test_a_client_cannot_dodge_the_rate_limit_with_a_forged_forwarded_for(
    api, simulator, settings
):
    settings.USE_X_FORWARDED_FOR = True
    settings.SESSION_RATE_LIMIT_PER_IP = 2
    statuses = []
    for index in range(4):
        # The proxy appends the address it saw (203.0.113.9); the client wrote the rest.
        response = await api.post(
            "/session",
            content_type="application/json",
            headers={"X-Forwarded-For": f"10.8.{index}.1, 203.0.113.9"},
        )
        statuses.append(response.status_code)

    assert statuses == [201, 201, 429, 429]


async def test_concurrent_requests_cannot_exceed_the_limit(api, simulator, settings):
    import asyncio

    settings.SESSION_RATE_LIMIT_PER_IP = 5

    responses = await asyncio.gather(
        *[api.post("/session", content_type="application/json") for _ in range(12)]
    )

    assert sorted(r.status_code for r in responses) == [201] * 5 + [429] * 7


@pytest.mark.parametrize("answer", [b'{"expires_at": 1}', b"[1]", b"not json"])
async def test_an_upstream_answer_without_a_secret_is_refused_as_unusable(api, settings, answer):
    # Given an upstream that answers 200 with no client secret in it
    async def upstream(reader, writer):
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # the headers; the body is not needed
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
            + answer
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    settings.OPENAI_MAX_RETRIES = 0
    async with server:
        response = await api.post("/session", content_type="application/json")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_bad_answer"
    assert await VoiceSession.objects.acount() == 0
