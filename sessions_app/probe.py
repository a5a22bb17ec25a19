"""A real WebRTC caller (aiortc) for our own API: what a browser does, from Python.

Used by the test suite, the latency benchmark and post-deployment checks: create a
session, offer a microphone track and the `oai-events` channel, connect, talk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

import aioice.ice
import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack


@dataclass
class ProbeCall:
    session: dict
    call_id: str
    peer: RTCPeerConnection
    channel: object
    events: list[dict] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    connect_seconds: float = 0.0

    def send(self, event: dict) -> None:
        self.channel.send(json.dumps(event))

    def say(self, text: str) -> None:
        """Types a user message and asks for a response, as the page's text box does."""
        self.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            }
        )
        self.send({"type": "response.create"})

    async def wait_for(self, predicate, timeout: float = 10.0, what: str = "") -> dict:
        """The first event (already seen or to come) for which predicate is true; a
        TimeoutError naming what was awaited (and every event seen) after timeout s."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no {what or 'matching event'} within {timeout} s among "
                    f"{[e['type'] for e in self.events]}"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def close(self) -> None:
        await self.peer.close()


def gather_on_loopback_only() -> None:
    """Makes aiortc offer host candidates on 127.0.0.1 only, so every packet stays on this
    machine. The probe's own rule, not borrowed from the simulator (which has the same
    one-liner for its side): the probe calls our API, whatever upstream is behind it."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


async def offering_peer() -> tuple[RTCPeerConnection, object]:
    """A peer with a (silent) microphone track and the `oai-events` channel, its offer
    set as local description: what a browser page has before it posts to /sdp."""
    gather_on_loopback_only()
    peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peer.addTrack(AudioStreamTrack())
    channel = peer.createDataChannel("oai-events")
    await peer.setLocalDescription(await peer.createOffer())
    return peer, channel


async def open_call(
    http: httpx.AsyncClient,
    *,
    session: dict | None = None,
    session_body: dict | None = None,
    timeout: float = 10.0,
) -> ProbeCall:
    """Creates a session (unless given one), connects WebRTC through /sdp, and waits for
    the data channel to open."""
    if session is None:
        created = await http.post("/session", json=session_body or {})
        created.raise_for_status()
        session = created.json()
    started = time.perf_counter()
    peer, channel = await offering_peer()
    opened = asyncio.Event()
    call = ProbeCall(session=session, call_id="", peer=peer, channel=channel)

    @channel.on("open")
    def on_open() -> None:
        opened.set()

    @channel.on("message")
    def on_message(message: str) -> None:
        call.events.append(json.loads(message))
        call._arrived.set()

    answer = await http.post(
        session["urls"]["sdp"],
        content=peer.localDescription.sdp,
        headers={
            "Content-Type": "application/sdp",
            "Authorization": f"Bearer {session['session_token']}",
        },
    )
    if answer.status_code != 201:
        await peer.close()
        answer.raise_for_status()
    call.call_id = answer.headers["X-Call-Id"]
    await peer.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
    try:
        await asyncio.wait_for(opened.wait(), timeout)
    except TimeoutError:
        await peer.close()
        raise
    call.connect_seconds = time.perf_counter() - started
    return call
