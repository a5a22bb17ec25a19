"""The simulator's WebRTC side: a real aiortc peer that answers the caller's offer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import struct
import time

import aioice.ice
import structlog
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from django.conf import settings

from .state import SimCall

log = structlog.get_logger(__name__)

# What a caller needs to reach a simulator that answers on loopback only.
_LOOPBACK_HINT = (
    "the simulator's WebRTC peer answers on 127.0.0.1 only: call it from a browser started "
    "with --allow-loopback-in-peer-connection, or from aiortc with its host addresses "
    "limited to loopback (aioice.ice.get_host_addresses returning 127.0.0.1)"
)


class InvalidOffer(ValueError):
    pass


# The model's voice: a 400 Hz tone at 8 kHz, a whole number of periods per 20 ms frame.
_TONE = struct.pack(
    "<160h", *(int(8000 * math.sin(2 * math.pi * 400 * n / 8000)) for n in range(160))
)


class Voice(AudioStreamTrack):
    """What the caller hears: a tone while the scripted model speaks, silence otherwise
    (so a page can show a level for the assistant's voice)."""

    def __init__(self, call: SimCall) -> None:
        super().__init__()
        self._call = call

    async def recv(self):
        frame = await super().recv()
        conversation = self._call.conversation
        if conversation is not None and time.monotonic() < conversation.speaking_until:
            for plane in frame.planes:
                sound = _TONE[: plane.buffer_size]
                plane.update(sound + bytes(plane.buffer_size - len(sound)))
        return frame


def restrict_ice_to_loopback() -> None:
    """Gathers host candidates on loopback only: the simulator and its callers share a
    machine, and nothing should be sent to any other address."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


def loopback_candidates_only(sdp: str) -> str:
    """The offer without ICE candidates on other addresses: the simulator checks
    connectivity on loopback only (a peer may still reach it from another address)."""
    kept = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) > 4 and fields[4] not in ("127.0.0.1", "::1"):
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


def check_offer(sdp: str) -> None:
    if not sdp.startswith("v=0") or "\nm=" not in sdp:
        raise InvalidOffer("The SDP offer is not a valid session description.")
    if "a=fingerprint:" not in sdp or "a=ice-ufrag:" not in sdp:
        raise InvalidOffer("The SDP offer lacks ICE credentials or a DTLS fingerprint.")


async def answer(call: SimCall, offer_sdp: str) -> str:
    """Answers the offer with a real peer bound to the call; returns the answer SDP."""
    check_offer(offer_sdp)
    # An offer without a loopback candidate is usual: a browser posts its offer before
    # gathering any, and the answer's candidate is then reached by the browser's own
    # checks. Only a call whose media never connects is worth a word (_on_state).
    without_loopback_candidate = False
    if settings.SIMULATOR_ICE_LOOPBACK_ONLY:
        restrict_ice_to_loopback()
        offer_sdp = loopback_candidates_only(offer_sdp)
        without_loopback_candidate = "a=candidate:" not in offer_sdp
    # No ICE servers: aiortc would otherwise ask a public STUN server.
    peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    call.peer = peer
    connected = False

    @peer.on("datachannel")
    def on_datachannel(channel) -> None:
        if channel.label != "oai-events":
            return
        call.channel = channel

        @channel.on("message")
        def on_message(message) -> None:
            try:
                event = json.loads(message)
                if not isinstance(event, dict):
                    raise ValueError
            except ValueError:
                asyncio.ensure_future(
                    call.emit(
                        {
                            "type": "error",
                            "error": {
                                "type": "invalid_request_error",
                                "code": "invalid_json",
                                "message": "Client events must be JSON objects.",
                            },
                        }
                    )
                )
                return
            asyncio.ensure_future(call.receive(event))

        asyncio.ensure_future(call.conversation.start())

    @peer.on("track")
    def on_track(track) -> None:
        if track.kind == "audio":
            asyncio.ensure_future(_listen(call, track))

    @peer.on("connectionstatechange")
    async def on_state() -> None:
        nonlocal connected
        if peer.connectionState == "connected":
            connected = True
        elif peer.connectionState in ("failed", "closed"):
            if not connected and without_loopback_candidate:
                # The call ended (ICE failed, or it was hung up) before its media ever
                # connected, and the caller offered nothing on loopback: likely a
                # browser that may not use loopback candidates. Say how to call.
                log.warning(
                    "media_never_connected_without_loopback_candidate",
                    call_id=call.call_id,
                    state=peer.connectionState,
                    hint=_LOOPBACK_HINT,
                )
            await call.close(peer.connectionState)

    try:
        await peer.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        for transceiver in peer.getTransceivers():
            if transceiver.kind == "audio":
                peer.addTrack(Voice(call))
                break
        await peer.setLocalDescription(await peer.createAnswer())
    except Exception as exc:  # aiortc raises several types for a bad offer
        await call.close("failed")
        raise InvalidOffer(f"The SDP offer could not be negotiated: {exc}") from None
    call.state = "connecting"
    return peer.localDescription.sdp


async def _listen(call: SimCall, track) -> None:
    """Simulated voice activity: after enough audio, the scripted user speaks once."""
    needed = settings.SIMULATOR_SPEECH_AFTER_SECONDS
    heard = 0.0
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            frame = await track.recv()
            if needed <= 0 or call.conversation is None or call.conversation.spoke:
                continue
            heard += frame.samples / frame.sample_rate
            if heard >= needed:
                await call.conversation.user_spoke()
