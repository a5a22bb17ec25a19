"""ws /ws/ops/: the dashboard's sections, re-rendered every couple of seconds and sent
when they change, for signed-in staff with ops_app.view_operations (ops_app.access)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from channels.auth import get_user
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model

from ops_app import dashboard
from ops_app.access import CANCEL_TASK, OPERATE, VIEW, permits

log = structlog.get_logger(__name__)

PUSH_SECONDS = 2.0
# How often the user's permissions are read again, so a revoked, deactivated or
# no longer staff operator stops receiving within this long.
RECHECK_SECONDS = 30.0
REFUSED = 4403


class OpsDashboardConsumer(AsyncJsonWebsocketConsumer):
    ticker: asyncio.Task | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not await permits(user, VIEW):
            await self.close(code=REFUSED)
            return
        self.user_id = user.pk
        self.can_operate = await permits(user, OPERATE)
        self.can_cancel = await permits(user, CANCEL_TASK)
        self.sent: dict[str, str] = {}
        await self.accept()
        self.ticker = asyncio.create_task(self._run())

    async def disconnect(self, code: int) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.ticker

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while True:
            try:
                if loop.time() - checked >= RECHECK_SECONDS:
                    checked = loop.time()
                    if not await self._still_allowed():
                        await self.close(code=REFUSED)
                        return
                await self.push()
            except Exception as exc:  # the database or Redis is down: try again later
                log.warning("ops_dashboard_push_failed", error=type(exc).__name__)
            await asyncio.sleep(PUSH_SECONDS)

    async def push(self) -> None:
        """Sends the sections whose HTML changed since the last push (all, the first
        time)."""
        snap = await dashboard.snapshot()
        sections = dashboard.render(snap, can_operate=self.can_operate, can_cancel=self.can_cancel)
        changed = {key: html for key, html in sections.items() if self.sent.get(key) != html}
        if changed:
            self.sent.update(changed)
            await self.send_json({"type": "ops.update", "html": changed})

    async def _still_allowed(self) -> bool:
        # Through the login session, not just the user row: signing out, or a password
        # change, ends the feed as it ends the page.
        if "session" in self.scope:
            user = await get_user(self.scope)
        else:  # a scope built without the session middleware (tests)
            user = await get_user_model().objects.filter(pk=self.user_id).afirst()
        if user is None or user.pk != self.user_id or not await permits(user, VIEW):
            return False
        self.can_operate = await permits(user, OPERATE)
        self.can_cancel = await permits(user, CANCEL_TASK)
        return True
