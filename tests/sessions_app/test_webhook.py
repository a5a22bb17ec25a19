"""POST /webhook/openai: Standard Webhooks verification, once-only effects, SIP calls."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from sessions_app.models import VoiceSession, WebhookEvent
from sessions_app.simulator import sign_webhook

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "whsec_" + base64.b64encode(b"test-webhook-secret-0123456789").decode()
NEXT_SECRET = "whsec_" + base64.b64encode(b"rotated-webhook-secret-98765").decode()


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.OPENAI_WEBHOOK_SECRETS = [SECRET]


def signed(
    event: dict, *, secret: str = SECRET, webhook_id: str = "wh_1", timestamp: int | None = None
) -> tuple[str, dict]:
    body = json.dumps(event)
    headers = sign_webhook(secret, webhook_id, timestamp or int(time.time()), body)
    return body, headers


EVENT = {
    "id": "evt_1",
    "object": "event",
    "type": "realtime.call.ended",
    "created_at": 1,
    "data": {"call_id": "rtc_x"},
}


async def post(api, body, headers):
    return await api.post(
        "/webhook/openai",
        body,
        content_type="application/json",
        headers={k: v for k, v in headers.items() if k != "content-type"},
    )


async def test_it_records_a_signed_event_and_acknowledges_it(api):
    response = await post(api, *signed(EVENT))

    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "outcome": "recorded"}
    record = await WebhookEvent.objects.aget(webhook_id="wh_1")
    assert record.event_type == "realtime.call.ended" and record.payload == EVENT


async def test_a_replayed_webhook_is_acknowledged_without_a_second_effect(api):
    body, headers = signed(EVENT)

    first = await post(api, body, headers)
    second = await post(api, body, headers)

    assert first.status_code == second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert await WebhookEvent.objects.acount() == 1


async def test_it_accepts_any_of_several_signatures_and_rotated_secrets(api, settings):
    settings.OPENAI_WEBHOOK_SECRETS = [SECRET, NEXT_SECRET]
    body, headers = signed(EVENT, secret=NEXT_SECRET)
    headers["webhook-signature"] = "v1,bm90LXRoaXMtb25l " + headers["webhook-signature"]

    response = await post(api, body, headers)

    assert response.status_code == 200


async def test_deliveries_arriving_together_are_each_recorded_once(api):
    # Given twelve events, and a redelivery of every third, all posted at once
    deliveries = [signed({**EVENT, "id": f"evt_{n}"}, webhook_id=f"wh_{n}") for n in range(12)]
    deliveries += [deliveries[n] for n in range(0, 12, 3)]

    responses = await asyncio.gather(*(post(api, *delivery) for delivery in deliveries))

    # Then each event is stored once, and each sender is told which its delivery was
    assert [r.status_code for r in responses] == [200] * 16
    statuses = [r.json()["status"] for r in responses]
    assert statuses.count("accepted") == 12 and statuses.count("duplicate") == 4
    stored = {e.webhook_id: e.payload["id"] async for e in WebhookEvent.objects.all()}
    assert stored == {f"wh_{n}": f"evt_{n}" for n in range(12)}


async def test_the_same_delivery_posted_at_once_is_accepted_once(api):
    body, headers = signed(EVENT)

    responses = await asyncio.gather(*(post(api, body, headers) for _ in range(5)))

    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["accepted"] + ["duplicate"] * 4
    assert await WebhookEvent.objects.acount() == 1


async def test_a_redelivery_leaves_the_stored_event_as_it_was(api):
    await post(api, *signed(EVENT))
    # A later delivery under the same webhook-id, even with another (signed) body
    changed = {**EVENT, "data": {"call_id": "rtc_other"}}

    response = await post(api, *signed(changed))

    assert response.json() == {"status": "duplicate", "outcome": None}
    record = await WebhookEvent.objects.aget(webhook_id="wh_1")
    assert record.payload == EVENT and record.outcome == "recorded"


async def test_a_signed_body_that_is_not_json_is_a_json_error(api):
    response = await post(api, *sign_text("{not json"))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert await WebhookEvent.objects.acount() == 0


def sign_text(body: str) -> tuple[str, dict]:
    return body, sign_webhook(SECRET, "wh_1", int(time.time()), body)


@pytest.mark.parametrize(
    "tamper",
    [
        "forged_signature",
        "stale",
        "future",
        "missing_headers",
        "other_body",
        "garbage_signature",
        "wrong_secret",
    ],
)
async def test_it_rejects_what_it_cannot_verify(api, tamper):
    body, headers = signed(EVENT)
    now = int(time.time())
    if tamper == "forged_signature":
        headers["webhook-signature"] = "v1," + base64.b64encode(b"x" * 32).decode()
    elif tamper == "stale":
        body, headers = signed(EVENT, timestamp=now - 301)
    elif tamper == "future":
        # Well past the 300 s: time passes between signing and verifying (and `now` is
        # rounded down), so a second past it could be inside the window by then.
        body, headers = signed(EVENT, timestamp=now + 330)
    elif tamper == "missing_headers":
        headers = {}
    elif tamper == "other_body":
        body = body.replace("rtc_x", "rtc_y")
    elif tamper == "garbage_signature":
        headers["webhook-signature"] = "no-comma-here"
    elif tamper == "wrong_secret":
        body, headers = signed(EVENT, secret=NEXT_SECRET)

    response = await post(api, body, headers)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert await WebhookEvent.objects.acount() == 0


async def test_it_rejects_a_signed_body_that_is_not_an_event(api):
    response = await post(api, *signed(["not", "an", "event"]))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhook"


async def test_an_unknown_provider_is_404(api):
    response = await api.post("/webhook/stripe", "{}", content_type="application/json")

    assert response.status_code == 404


async def test_an_incoming_sip_call_is_accepted_with_our_config(api, simulator, settings):
    settings.OPENAI_WEBHOOK_SECRETS = [settings.SIMULATOR_WEBHOOK_SECRET]
    settings.SIDEBAND_ENABLED = False
    # The simulator rings a SIP call (it signs the webhook itself); we receive it here.
    call = await _ring(simulator)
    body, headers = signed(call["event"], secret=settings.SIMULATOR_WEBHOOK_SECRET)

    response = await post(api, body, headers)

    assert response.status_code == 200 and response.json()["outcome"] == "accepted"
    session = await VoiceSession.objects.aget(call_id=call["call_id"])
    assert session.source == "sip" and session.status == "active"
    upstream = simulator.call(call["call_id"])
    assert upstream["state"] == "accepted"
    assert upstream["session"]["instructions"] == session.instructions


async def test_an_incoming_sip_call_is_rejected_in_maintenance(api, simulator, settings):
    settings.MAINTENANCE_MODE = True
    call = await _ring(simulator)

    response = await post(api, *signed(call["event"]))

    assert response.json()["outcome"] == "rejected: maintenance"
    assert simulator.call(call["call_id"])["state"] == "rejected:503"
    assert await VoiceSession.objects.acount() == 0


async def test_a_failed_accept_is_retried_by_the_sender_and_then_done_once(
    api, simulator, settings
):
    settings.OPENAI_MAX_RETRIES = 0
    settings.SIDEBAND_ENABLED = False
    call = await _ring(simulator)
    body, headers = signed(call["event"])
    simulator.fault("error", status=500, count=1, operations=["accept"])

    failed = await post(api, body, headers)
    retried = await post(api, body, headers)
    again = await post(api, body, headers)

    assert failed.status_code == 503 and failed["Retry-After"]
    assert retried.json()["outcome"] == "accepted"
    assert again.json()["status"] == "duplicate"
    assert await VoiceSession.objects.acount() == 1


async def _ring(simulator) -> dict:
    """Registers a ringing SIP call in the simulator, returning its incoming-call event.
    The simulator delivers it to a URL; here it is delivered to a throwaway receiver so
    the test can post it to our app in-process."""
    import asyncio

    received: dict = {}

    async def receiver(reader, writer):
        head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
        length = int(head.split("content-length:")[1].split("\r\n")[0])
        received["body"] = await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(receiver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await asyncio.to_thread(
            simulator.control,
            "webhook",
            {"type": "realtime.call.incoming", "url": f"http://127.0.0.1:{port}/hook"},
        )
    return {"call_id": result["call_id"], "event": json.loads(received["body"])}


@pytest.mark.parametrize(
    "event",
    [
        {"type": "realtime.call.incoming", "data": "x"},
        {"type": "realtime.call.incoming", "data": [1]},
        {"type": "x", "data": {"text": "nul\u0000"}},
    ],
)
async def test_a_signed_body_of_the_wrong_shape_is_400(api, event):
    response = await post(api, *signed(event))

    assert response.status_code == 400
    assert await WebhookEvent.objects.acount() == 0


async def test_odd_sip_fields_are_tolerated(api, simulator, settings):
    settings.SIDEBAND_ENABLED = False
    call = await _ring(simulator)
    call["event"]["data"]["sip_headers"] = 5
    long_id = dict(call["event"], data={"call_id": "rtc_" + "x" * 200})

    accepted = await post(api, *signed(call["event"]))
    ignored = await post(api, *signed(long_id, webhook_id="wh_2"))

    assert accepted.json()["outcome"] == "accepted"
    assert ignored.json()["outcome"] == "ignored: no usable call_id"


async def test_an_accept_refused_for_good_is_not_retried(api, simulator, settings):
    settings.OPENAI_MAX_RETRIES = 0
    event = {"type": "realtime.call.incoming", "data": {"call_id": "rtc_gone"}}

    response = await post(api, *signed(event))

    assert response.status_code == 200
    assert response.json()["outcome"] == "failed: upstream_refused"
    session = await VoiceSession.objects.aget(call_id="rtc_gone")
    assert session.status == "failed"
