"""Live events of one session for its browser: transcript items, tool progress, end.

The session token comes in the Sec-WebSocket-Protocol header, `bearer.<token>` offered
next to `voiceplatform.v1` (which is the one echoed), or as the first message,
`{"type": "auth", "token": ...}`, within WS_AUTH_TIMEOUT_SECONDS; never in the URL,
whose query strings proxies log. Sockets are limited per session and per client
address, refused for a session that is not live, and closed when it ends.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from enum import IntEnum

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from ops_app import slots
from sessions_app import events, journal, tokens
from sessions_app.models import VoiceSession
from voiceplatform.api import scope_client_ip
from voiceplatform.errors import Unauthorized

PROTOCOL = "voiceplatform.v1"
BEARER_PREFIX = "bearer."
# The expiry sweep ends an overdue session within its interval and tells the page; a
# socket still open this long after the session expired missed that, and closes.
AFTER_EXPIRY = timedelta(seconds=60)


class CloseCode(IntEnum):
    """Why the server closes (or refuses) a session's socket. Passed to close() as a
    plain int: daphne's autobahn refuses any other type, an IntEnum included."""

    ENDED = 1000  # the session ended; its last event was session.ended
    NO_PROTOCOL = 4400  # subprotocols offered, but not voiceplatform.v1 among them
    UNAUTHORIZED = 4401  # no token, a forged or expired one, or none in time
    WRONG_SESSION = 4403  # a token of another session
    NOT_LIVE = 4410  # the session has ended or expired
    TOO_MANY = 4429  # too many sockets for this session or client address


def slot_lifetime() -> int:
    """Longest a socket stays open: the session's lifetime, then AFTER_EXPIRY, plus
    the time it had to authenticate (see ops_app.slots)."""
    extra = AFTER_EXPIRY.total_seconds() + settings.WS_AUTH_TIMEOUT_SECONDS
    return int(settings.SESSION_MAX_SECONDS + extra) + 1


class SessionEventsConsumer(AsyncJsonWebsocketConsumer):
    session_id: str
    group: str | None = None
    timer: asyncio.Task | None = None
    authenticated = False

    async def connect(self) -> None:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        self.held: list[str] = []  # slots taken, given back on disconnect
        offered = self.scope.get("subprotocols") or []
        self.protocol = PROTOCOL if PROTOCOL in offered else None
        if offered and self.protocol is None:
            # Accepting without choosing one would fail the client's handshake anyway;
            # say why instead.
            await self.close(code=int(CloseCode.NO_PROTOCOL))
            return
        address = scope_client_ip(self.scope) or "unknown"
        if not await self._take(f"ws-ip:{address}", settings.WS_MAX_PER_IP):
            await self.close(code=int(CloseCode.TOO_MANY))
            return
        bearer = [name for name in offered if name.startswith(BEARER_PREFIX)]
        if not bearer:
            # The token is to come as the first message.
            await self.accept(self.protocol)
            self._close_after(settings.WS_AUTH_TIMEOUT_SECONDS, CloseCode.UNAUTHORIZED)
            return
        session = await self._authenticate(bearer[0].removeprefix(BEARER_PREFIX))
        if isinstance(session, CloseCode):
            await self.close(code=int(session))
            return
        await self.accept(self.protocol)
        await self._start(session)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if self.authenticated:
            return  # the page has nothing to tell us once it listens
        try:
            message = json.loads(text_data or "")
        except ValueError:
            message = None
        token = None
        if isinstance(message, dict) and message.get("type") == "auth":
            token = message.get("token")
        if not isinstance(token, str):
            await self.close(code=int(CloseCode.UNAUTHORIZED))
            return
        session = await self._authenticate(token)
        if isinstance(session, CloseCode):
            await self.close(code=int(session))
            return
        await self._start(session)

    async def disconnect(self, code: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        for slot in self.held:
            await slots.give_back(slot)
        self.held = []

    async def session_event(self, message: dict) -> None:
        if not self.authenticated:
            return
        await self.send_json(message["event"])
        if message["event"]["type"] == events.LiveEvent.SESSION_ENDED:
            await self.close(code=int(CloseCode.ENDED))

    async def session_events(self, message: dict) -> None:
        """Several at once (events.publish_many)."""
        for event in message["events"]:
            await self.session_event({"event": event})

    async def _authenticate(self, token: str) -> VoiceSession | CloseCode:
        """The live session the token opens, or why the socket is refused."""
        try:
            token_session = tokens.session_id_from(token)
        except Unauthorized:
            return CloseCode.UNAUTHORIZED
        if token_session != self.session_id:
            return CloseCode.WRONG_SESSION
        # Listen before looking: an end published in between is then heard, not missed.
        self.group = events.session_group(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        # Its row, or at level 3 its snapshot: live sessions go on without the database.
        session = await journal.lookup(self.session_id)
        if session is None or not session.is_live or session.end_due:
            return CloseCode.NOT_LIVE
        if not await self._take(f"ws-session:{self.session_id}", settings.WS_MAX_PER_SESSION):
            return CloseCode.TOO_MANY
        return session

    async def _start(self, session: VoiceSession) -> None:
        self.authenticated = True
        remaining = session.expires_at + AFTER_EXPIRY - timezone.now()
        self._close_after(remaining.total_seconds(), CloseCode.NOT_LIVE)
        await self.send_json(
            {
                "type": events.LiveEvent.SESSION_STATE,
                "status": session.status,
                "sideband_connected": session.sideband_connected,
                "expires_at": session.expires_at.isoformat(),
            }
        )

    async def _take(self, name: str, limit: int) -> bool:
        slot = await slots.take(name, limit, slot_lifetime())
        if slot is not None:
            self.held.append(slot)
        return slot is not None

    def _close_after(self, seconds: float, code: CloseCode) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.create_task(self._close_later(max(0.0, seconds), code))

    async def _close_later(self, seconds: float, code: CloseCode) -> None:
        await asyncio.sleep(seconds)
        await self.close(code=int(code))
