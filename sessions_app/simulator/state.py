"""What the simulator remembers, in memory: secrets, calls, and the fault switch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from .conversation import Conversation


@dataclass
class Fault:
    """A failure mode: `error` (5xx), `rate_limit` (429) or `slow` (delay, then normal)."""

    mode: str
    status: int = 500
    delay: float = 0.0
    retry_after_ms: int = 100
    remaining: int | None = None  # None: until switched off
    operations: frozenset[str] = frozenset()  # empty: every operation

    def applies_to(self, operation: str) -> bool:
        if not self.operations:
            return operation not in NAMED_ONLY
        return operation in self.operations


# Operations a fault reaches only when it names them: one for "every operation" is the
# HTTP API's (a sideband refused on the side would change what those tests see).
NAMED_ONLY = frozenset({"sideband"})


EVENTS_KEPT = 5000
TERMINAL_STATES = frozenset({"hung_up", "ended", "failed", "closed"})


@dataclass
class SimCall:
    call_id: str
    session: dict
    conversation: Conversation | None = None
    peer: object | None = None  # aiortc RTCPeerConnection, None for SIP calls
    channel: object | None = None  # the `oai-events` data channel
    state: str = "new"
    subscribers: set[asyncio.Queue] = field(default_factory=set)
    # The latest events either way (a call under load plays for minutes).
    events_sent: deque = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    events_received: deque = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    sideband_sent: int = 0  # events written to its sideband connections, all told
    created_at: float = field(default_factory=time.time)

    async def emit(self, event: dict) -> None:
        event = {"event_id": f"event_{secrets.token_hex(8)}", **event}
        self.events_sent.append(event)
        channel = self.channel
        if channel is not None and getattr(channel, "readyState", "") == "open":
            channel.send(json.dumps(event))
        for queue in list(self.subscribers):
            queue.put_nowait(event)

    async def receive(self, event: dict) -> None:
        self.events_received.append(event)
        if self.conversation is not None:
            await self.conversation.handle(event)

    async def close(self, state: str = "ended") -> None:
        if self.state in TERMINAL_STATES:
            return
        self.state = state
        for queue in list(self.subscribers):
            queue.put_nowait(None)  # tells each sideband connection to close
        peer, self.peer = self.peer, None
        if peer is not None:
            with contextlib.suppress(Exception):
                await peer.close()

    def summary(self) -> dict:
        return {
            "call_id": self.call_id,
            "state": self.state,
            "sideband_connections": len(self.subscribers),
            "events_sent": [event["type"] for event in self.events_sent],
            "events_received": list(self.events_received),
            "session": self.session,
        }


class SimulatorState:
    def __init__(self) -> None:
        self.secrets: dict[str, tuple[float, dict]] = {}
        self.calls: dict[str, SimCall] = {}
        self.fault: Fault | None = None

    def issue_secret(self, session: dict, ttl: int) -> tuple[str, int]:
        value = "ek_sim_" + secrets.token_urlsafe(24)
        expires_at = int(time.time()) + ttl
        self.secrets[value] = (expires_at, session)
        return value, expires_at

    def session_for_secret(self, value: str) -> dict | None:
        found = self.secrets.get(value)
        if found is None or found[0] < time.time():
            return None
        return found[1]

    def new_call(self, session: dict) -> SimCall:
        call_id = "rtc_" + secrets.token_hex(12)
        call = SimCall(call_id=call_id, session=session)
        call.conversation = Conversation(emit=call.emit, call_id=call_id, session=session)
        self.calls[call_id] = call
        return call

    def take_fault(self, operation: str) -> Fault | None:
        fault = self.fault
        if fault is None or not fault.applies_to(operation):
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.fault = None
        return fault

    async def reset(self) -> None:
        for call in list(self.calls.values()):
            await call.close()
        self.calls.clear()
        self.secrets.clear()
        self.fault = None


STATE = SimulatorState()
