"""Rate limits on every door a caller can hammer (/session, transcript intake, /tools,
webhooks), each answer telling the caller where it stands (X-RateLimit-*)."""

from __future__ import annotations

import pytest

from sessions_app import tokens

pytestmark = pytest.mark.django_db(transaction=True)


def _standing(response) -> tuple[int, int, int]:
    return (
        int(response["X-RateLimit-Limit"]),
        int(response["X-RateLimit-Remaining"]),
        int(response["X-RateLimit-Reset"]),
    )


async def test_session_answers_carry_the_tightest_limit_they_met(api, simulator, settings):
    settings.SESSION_RATE_LIMIT_PER_IP = 2

    first = await api.post("/session", content_type="application/json")
    second = await api.post("/session", content_type="application/json")
    refused = await api.post("/session", content_type="application/json")

    assert (first.status_code, second.status_code, refused.status_code) == (201, 201, 429)
    limit, remaining, reset = _standing(first)
    assert (limit, remaining) == (2, 1) and 1 <= reset <= 61
    assert _standing(second)[:2] == (2, 0)
    assert _standing(refused)[:2] == (2, 0)
    assert int(refused["Retry-After"]) == _standing(refused)[2]


async def test_tools_are_rate_limited_per_session(api, settings, make_session):
    from tools_app import policy

    settings.TOOLS_RATE_PER_MINUTE = 2
    session = await make_session(status="active", tools=policy.definitions(["read_file"]))
    auth = {"Authorization": f"Bearer {tokens.issue(session.pk)}"}

    async def call(n: int):
        return await api.post(
            "/tools/read_file",
            {"call_id": f"c{n}", "arguments": {"file_path": "nothing.txt"}},
            content_type="application/json",
            headers=auth,
        )

    statuses = [(await call(n)).status_code for n in range(3)]
    refused = await call(9)

    assert statuses == [200, 200, 429]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert _standing(refused)[:2] == (2, 0)


async def test_webhooks_are_rate_limited_per_sender(api, settings):
    settings.WEBHOOK_RATE_PER_MINUTE = 2

    statuses = [
        (await api.post("/webhook/openai", "{}", content_type="application/json")).status_code
        for _ in range(3)
    ]

    assert statuses == [400, 400, 429]  # unsigned: refused, and counted all the same


async def test_an_answer_that_met_no_limit_carries_no_headers(api):
    response = await api.get("/health/live")

    assert "X-RateLimit-Limit" not in response


async def test_a_hit_is_counted_in_redis_under_the_key_the_cache_reads():
    from asgiref.sync import sync_to_async
    from django.core.cache import cache

    from ops_app import ratelimit

    key = f"rl:test:shared:{int(ratelimit.time.time() // 60)}"  # the limiter's own clock

    await ratelimit.hit("test:shared", 5, audited=False)
    await ratelimit.hit("test:shared", 5, audited=False)

    assert await sync_to_async(cache.get)(key) == 2
