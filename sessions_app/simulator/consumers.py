"""The sideband: a server-side WebSocket on a call, seeing what the data channel sees."""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer

from .auth import has_server_key
from .state import STATE, TERMINAL_STATES, SimCall


class SidebandConsumer(AsyncWebsocketConsumer):
    call: SimCall | None = None
    queue: asyncio.Queue | None = None
    pump: asyncio.Task | None = None

    async def connect(self) -> None:
        headers = dict(self.scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        query = parse_qs(self.scope.get("query_string", b"").decode())
        call = STATE.calls.get((query.get("call_id") or [""])[0])
        if not has_server_key(authorization):
            await self.close(code=4401)
            return
        if call is None or call.state in TERMINAL_STATES:
            await self.close(code=4404)
            return
        fault = STATE.take_fault("sideband")
        if fault is not None and fault.mode == "slow":
            await asyncio.sleep(fault.delay)
        elif fault is not None:  # refused before the handshake ends (an HTTP 403)
            await self.close(code=4500)
            return
        await self.accept()
        self.call = call
        self.queue = asyncio.Queue()
        call.subscribers.add(self.queue)
        self.pump = asyncio.ensure_future(self._forward())
        await self.send(text_data=json.dumps({"type": "session.created", "session": call.session}))
        call.sideband_sent += 1

    async def _forward(self) -> None:
        while True:
            event = await self.queue.get()
            if event is None:
                await self.close()
                return
            await self.send(text_data=json.dumps(event))
            self.call.sideband_sent += 1

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        try:
            event = json.loads(text_data or "")
            if not isinstance(event, dict):
                raise ValueError
        except ValueError:
            await self.send(
                text_data=json.dumps(
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
        await self.call.receive(event)

    async def disconnect(self, code: int) -> None:
        if self.call is not None and self.queue is not None:
            self.call.subscribers.discard(self.queue)
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.pump
