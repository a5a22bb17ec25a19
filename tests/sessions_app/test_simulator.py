"""The simulator is wire-compatible with the official SDK and plays its script."""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging

import httpx
import openai
import pytest
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from sessions_app.probe import offering_peer
from tests.support import eventually, free_port
from voiceplatform.logconfig import json_formatter

BASH = {
    "type": "function",
    "name": "bash",
    "description": "Run a command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
}


@pytest.fixture
async def sdk(simulator):
    async with openai.AsyncOpenAI(
        api_key=simulator.key, base_url=simulator.url + "/v1", max_retries=0
    ) as client:
        yield client


async def _offer():
    peer, _ = await offering_peer()
    return peer


def _arrivals(channel) -> asyncio.Queue:
    """The events a data channel receives, in order."""
    queue: asyncio.Queue = asyncio.Queue()
    channel.on("message", lambda message: queue.put_nowait(json.loads(message)))
    return queue


async def test_the_sdk_mints_a_client_secret(sdk):
    secret = await sdk.realtime.client_secrets.create(
        session={"type": "realtime", "model": "gpt-realtime"},
        expires_after={"anchor": "created_at", "seconds": 60},
    )

    assert secret.value.startswith("ek_sim_") and secret.expires_at > 0
    assert secret.session.type == "realtime"


async def test_the_sdk_is_refused_with_a_wrong_key(simulator):
    async with openai.AsyncOpenAI(
        api_key="sk-wrong", base_url=simulator.url + "/v1", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.realtime.client_secrets.create(session={"type": "realtime"})


async def test_the_sdk_creates_a_call_talks_on_the_sideband_and_hangs_up(sdk, simulator):
    session = {"type": "realtime", "model": "gpt-realtime", "tools": [BASH]}
    secret = await sdk.realtime.client_secrets.create(session=session)
    peer, channel = await offering_peer()
    on_channel = _arrivals(channel)
    raw = await sdk.realtime.calls.with_raw_response.create(
        sdp=peer.localDescription.sdp, session=session
    )
    call_id = raw.headers["location"].rsplit("/", 1)[-1]
    await peer.setRemoteDescription(RTCSessionDescription(raw.http_response.text, "answer"))
    first_on_channel = await asyncio.wait_for(on_channel.get(), 10)

    async with asyncio.timeout(20), sdk.realtime.connect(call_id=call_id) as sideband:
        first_on_sideband = json.loads(await sideband.recv_bytes())
        await sideband.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "please list files"}],
            }
        )
        await sideband.response.create()
        call = None
        while call is None:
            event = json.loads(await sideband.recv_bytes())
            if event["type"] == "response.output_item.done":
                call = event["item"]
        await sideband.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": "README.md manage.py",
            }
        )
        await sideband.response.create()
        reply = None
        while reply is None:
            event = json.loads(await sideband.recv_bytes())
            if event["type"] == "response.output_audio_transcript.done":
                reply = event["transcript"]
        await sdk.realtime.calls.hangup(call_id)
    await peer.close()

    assert secret.value.startswith("ek_sim_") and secret.session.tools[0].name == "bash"
    assert raw.http_response.status_code == 201
    assert first_on_channel["type"] == "session.created"
    assert first_on_channel["session"]["tools"] == [BASH]
    assert first_on_sideband["type"] == "session.created"
    assert call["type"] == "function_call" and call["name"] == "bash"
    assert json.loads(call["arguments"]) == {"command": "ls -la"}
    assert reply == "Here is what I found: README.md manage.py"
    assert simulator.call(call_id)["state"] == "hung_up"


def _loudest(frame) -> int:
    size = frame.samples * 2 * len(frame.layout.channels)  # s16: two bytes a sample
    samples = array.array("h", bytes(frame.planes[0])[:size])
    return max((abs(sample) for sample in samples), default=0)


async def test_a_reply_is_heard_between_its_audio_started_and_stopped_events(sdk, simulator):
    # The scripted user speaks after half a second of (silent) microphone; the model
    # answers aloud: its voice is a tone between output_audio_buffer.started and stopped.
    clock = asyncio.get_running_loop().time
    peer, channel = await offering_peer()
    on_channel = _arrivals(channel)
    heard: list[tuple[float, int]] = []

    @peer.on("track")
    def on_track(track) -> None:
        async def listen() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    heard.append((clock(), _loudest(frame)))

        asyncio.ensure_future(listen())

    raw = await sdk.realtime.calls.with_raw_response.create(sdp=peer.localDescription.sdp)
    await peer.setRemoteDescription(RTCSessionDescription(raw.http_response.text, "answer"))
    seen: dict[str, float] = {}
    async with asyncio.timeout(15):
        while "output_audio_buffer.stopped" not in seen:
            seen.setdefault((await on_channel.get())["type"], clock())
    await asyncio.sleep(0.5)
    await peer.close()

    started, stopped = seen["output_audio_buffer.started"], seen["output_audio_buffer.stopped"]
    assert started < seen["response.done"] < stopped
    assert max(loudest for when, loudest in heard if started <= when <= stopped) > 1000
    # Before the model spoke there was nothing to hear.
    assert max((loudest for when, loudest in heard if when < started), default=0) < 100


async def test_a_browser_posts_raw_sdp_with_the_ephemeral_key(sdk, simulator):
    secret = await sdk.realtime.client_secrets.create(session={"type": "realtime"})
    peer = await _offer()

    async with httpx.AsyncClient() as http:
        answer = await http.post(
            simulator.url + "/v1/realtime/calls",
            content=peer.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {secret.value}"},
        )
        refused = await http.post(
            simulator.url + "/v1/realtime/calls",
            content=peer.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": "Bearer ek_sim_unknown"},
        )
    await peer.close()

    assert answer.status_code == 201 and answer.text.startswith("v=0")
    assert answer.headers["location"].startswith("/v1/realtime/calls/rtc_")
    assert refused.status_code == 401


async def test_switched_on_failures_reach_the_sdk(sdk, simulator):
    simulator.fault("rate_limit", count=1)
    with pytest.raises(openai.RateLimitError):
        await sdk.realtime.client_secrets.create(session={"type": "realtime"})

    simulator.fault("error", status=503, count=1)
    with pytest.raises(openai.InternalServerError):
        await sdk.realtime.client_secrets.create(session={"type": "realtime"})

    simulator.fault("slow", delay=0.3, count=1)
    started = asyncio.get_running_loop().time()
    await sdk.realtime.client_secrets.create(session={"type": "realtime"})
    assert asyncio.get_running_loop().time() - started >= 0.3


async def test_an_unknown_client_event_gets_an_error_event(sdk, simulator):
    peer = await _offer()
    raw = await sdk.realtime.calls.with_raw_response.create(sdp=peer.localDescription.sdp)
    call_id = raw.headers["location"].rsplit("/", 1)[-1]

    async with sdk.realtime.connect(call_id=call_id) as sideband:
        await sideband.send({"type": "no.such.event"})
        event = {"type": ""}
        while event["type"] != "error":
            event = json.loads(await sideband.recv_bytes())
    await peer.close()

    assert event["error"]["code"] == "unknown_event"


async def test_a_non_ascii_key_is_refused_not_a_crash():
    from django.test import AsyncClient

    response = await AsyncClient().post(
        "/simulator/v1/realtime/client_secrets",
        "{}",
        content_type="application/json",
        headers={"Authorization": "Bearer \xe9t\xe9"},
    )

    assert response.status_code == 401


async def test_the_embedded_mount_answers_the_sdk():
    from voiceplatform.asgi import application

    transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 5000))
    async with (
        httpx.AsyncClient(transport=transport) as http,
        openai.AsyncOpenAI(
            api_key="sk-sim-local",
            base_url="http://testserver/simulator/v1",
            http_client=http,
            max_retries=0,
        ) as client,
    ):
        secret = await client.realtime.client_secrets.create(session={"type": "realtime"})

    assert secret.value.startswith("ek_sim_")


async def test_on_its_own_it_serves_the_simulator_and_none_of_the_product(simulator):
    root = simulator.url.removesuffix("/simulator")
    async with httpx.AsyncClient(base_url=root) as http:
        live = await http.get("/simulator/health/live")
        product = await http.get("/health/live")

    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert product.status_code == 404 and product.json()["error"]["code"] == "not_found"


def _before_gathering(sdp: str) -> str:
    """The offer as a browser posts it before ICE gathering: no candidate, no end."""
    lines = [
        line
        for line in sdp.splitlines()
        if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    ]
    return "\r\n".join(lines) + "\r\n"


async def test_only_a_call_that_never_connects_without_a_loopback_candidate_warns(caplog):
    from sessions_app.simulator import application

    key = {"Authorization": "Bearer sk-sim-local", "Content-Type": "application/sdp"}
    # An ordinary browser call: the page posts its offer before ICE gathering, and the
    # browser's own checks reach the answer's candidate.
    browser, channel = await offering_peer()
    on_channel = _arrivals(channel)
    # What Chromium offers without --allow-loopback-in-peer-connection: other addresses
    # only (a documentation address here; the simulator drops it before any check).
    elsewhere, _ = await offering_peer()
    transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 5000))

    def warnings(call_id: str) -> list[dict]:
        # As an operator reads them: the JSON log lines.
        lines = [
            json.loads(json_formatter().format(record))
            for record in caplog.records
            if record.levelno >= logging.WARNING
        ]
        return [line for line in lines if line.get("call_id") == call_id]

    with caplog.at_level(logging.WARNING):
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            ordinary = await http.post(
                "/simulator/v1/realtime/calls",
                content=_before_gathering(browser.localDescription.sdp),
                headers=key,
            )
            await browser.setRemoteDescription(RTCSessionDescription(ordinary.text, "answer"))
            # The simulator's data channel opened: its media connected.
            first = await asyncio.wait_for(on_channel.get(), 10)
            await http.post(f"/simulator{ordinary.headers['location']}/hangup", headers=key)

            failing = await http.post(
                "/simulator/v1/realtime/calls",
                content=elsewhere.localDescription.sdp.replace("127.0.0.1", "192.0.2.10"),
                headers=key,
            )
            failing_id = failing.headers["location"].rsplit("/", 1)[-1]
            # Its media never connects; the caller gives up.
            await http.post(f"/simulator{failing.headers['location']}/hangup", headers=key)

            async def warned() -> list[dict]:
                return warnings(failing_id)

            [line] = await eventually(warned)
    await browser.close()
    await elsewhere.close()

    assert [ordinary.status_code, failing.status_code] == [201, 201]
    assert first["type"] == "session.created"
    assert warnings(ordinary.headers["location"].rsplit("/", 1)[-1]) == []
    assert line["event"] == "media_never_connected_without_loopback_candidate"
    assert line["state"] in {"failed", "closed"}
    assert "--allow-loopback-in-peer-connection" in line["hint"]
    assert "aiortc" in line["hint"]


async def test_control_endpoints_answer_only_this_machine():
    from voiceplatform.asgi import application

    key = {"Authorization": "Bearer sk-sim-local"}
    body = {"type": "x", "url": "http://192.0.2.10/"}
    transport = httpx.ASGITransport(app=application, client=("192.0.2.10", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as remote:
        refused = await remote.post("/simulator/_control/webhook", json=body, headers=key)

    assert refused.status_code == 401


async def test_an_undeliverable_webhook_is_reported_not_a_crash(simulator):
    result = simulator.control(
        "webhook", {"type": "x", "url": f"http://127.0.0.1:{free_port()}/hook"}
    )

    assert result["status"] is None and result["error"] == "ConnectError"


@pytest.fixture
async def on_this_machine():
    """httpx to the embedded simulator from a loopback address, with the server key."""
    from voiceplatform.asgi import application

    transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver/simulator",
        headers={"Authorization": "Bearer sk-sim-local"},
    ) as http:
        yield http


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", "192.0.2.10"),
        ("Forwarded", "for=192.0.2.10"),
        ("X-Real-IP", "192.0.2.10"),
    ],
)
async def test_control_endpoints_refuse_requests_that_came_through_a_proxy(on_this_machine, header):

    hook = {"type": "x", "url": f"http://127.0.0.1:{free_port()}/hook"}
    proxied = dict([header])

    webhook = await on_this_machine.post("/_control/webhook", json=hook, headers=proxied)
    fault = await on_this_machine.post("/_control/fault", json={"mode": "off"}, headers=proxied)
    reset = await on_this_machine.post("/_control/reset", headers=proxied)
    direct = await on_this_machine.post("/_control/fault", json={"mode": "off"})

    assert [webhook.status_code, fault.status_code, reset.status_code] == [403, 403, 403]
    assert webhook.json()["error"]["code"] == "forbidden"
    assert direct.status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "http://192.0.2.10/hook",
        "https://example.org/hook",
        "http://127.0.0.1@192.0.2.10/hook",
        "http://127.0.0.1.nip.io/hook",
        "http://2130706433/hook",
        "file:///etc/passwd",
        "ftp://127.0.0.1/hook",
        "not a url",
    ],
)
async def test_the_control_webhook_is_not_sent_off_this_machine(on_this_machine, url):
    response = await on_this_machine.post("/_control/webhook", json={"type": "x", "url": url})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_url"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]"])
async def test_the_control_webhook_is_sent_to_this_machine(on_this_machine, host):

    hook = {"type": "x", "url": f"http://{host}:{free_port()}/hook"}

    response = await on_this_machine.post("/_control/webhook", json=hook)

    # Sent: nothing listens on the port, so the delivery itself fails.
    assert response.status_code == 200
    assert response.json()["error"] == "ConnectError"


def test_the_simulator_says_what_it_is_where_the_readme_names_it(client):
    without_slash = client.get("/simulator")
    index = client.get("/simulator/")

    assert without_slash.status_code == 301 and without_slash["Location"] == "/simulator/"
    assert index.status_code == 200 and "POST v1/responses" in index.json()["endpoints"]
    assert client.post("/simulator/").status_code == 405
