"""Live events of one session for its browser: transcript items, tool progress, end."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from sessions_app import events, tokens
from sessions_app.models import VoiceSession
from voiceplatform.errors import Unauthorized


class SessionEventsConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            token_session = tokens.session_id_from((query.get("token") or [""])[0])
        except Unauthorized:
            await self.close(code=4401)
            return
        if token_session != session_id:
            await self.close(code=4403)
            return
        self.group = events.session_group(session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        session = await VoiceSession.objects.filter(pk=session_id).afirst()
        if session is not None:
            await self.send_json(
                {
                    "type": events.LiveEvent.SESSION_STATE,
                    "status": session.status,
                    "sideband_connected": session.sideband_connected,
                    "expires_at": session.expires_at.isoformat(),
                }
            )

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def session_event(self, message: dict) -> None:
        await self.send_json(message["event"])
