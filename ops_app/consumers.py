"""Staff's live feeds, for signed-in staff with the permissions their page asks
(ops_app.access), read again every RECHECK_SECONDS:

- ws /ws/ops/: the dashboard's sections, re-rendered every couple of seconds and sent
  when they change;
- ws /ws/ops/sessions/<id>/live/: one call's live view, its timeline and facts sent as
  they change, at once when the session's events say so (whichever process holds the
  call publishes them, over the channel layer) and every few seconds regardless."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from channels.auth import get_user
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from ops_app import dashboard, live_call
from ops_app.access import CANCEL_TASK, END_CALL, OPERATE, READ_SESSIONS, VIEW, WATCH, permits
from sessions_app import events
from sessions_app.models import SESSION_ID

log = structlog.get_logger(__name__)

PUSH_SECONDS = 2.0
# How often the user's permissions are read again, so a revoked, deactivated or
# no longer staff operator stops receiving within this long.
RECHECK_SECONDS = 30.0
REFUSED = 4403
ENDED = 1000


class StaffFeed(AsyncJsonWebsocketConsumer):
    """A feed a page of staff's pushes through: refused (4403) to whoever lacks
    `needed`, closed when that changes; push() sends what changed, once at the start,
    then whenever woken (wake()) or every PUSH_SECONDS."""

    needed: tuple[str, ...] = (VIEW,)
    settle_seconds = 0.0
    ticker: asyncio.Task | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not await permits(user, *self.needed):
            await self.close(code=REFUSED)
            return
        self.user_id = user.pk
        await self._read_permissions(user)
        self.woken = asyncio.Event()
        if await self.start() is False:
            await self.close(code=REFUSED)
            return
        await self.accept()
        self.ticker = asyncio.create_task(self._run())

    async def start(self) -> bool | None:
        """What a feed does before it is accepted; False refuses it."""

    async def disconnect(self, code: int) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.ticker

    def wake(self) -> None:
        self.woken.set()

    async def push(self) -> bool | None:
        """Sends what changed; False when the feed is over (it closed)."""
        raise NotImplementedError

    async def _read_permissions(self, user) -> None:
        self.can_operate = await permits(user, OPERATE)
        self.can_cancel = await permits(user, CANCEL_TASK)
        self.can_end = await permits(user, END_CALL)
        self.can_watch = await permits(user, READ_SESSIONS)

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
                if await self.push() is False:
                    return
            except Exception as exc:  # the database or Redis is down: try again later
                log.warning(
                    "staff_feed_push_failed", feed=type(self).__name__, error=type(exc).__name__
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), PUSH_SECONDS)
                # Woken: let the burst it belongs to arrive, then read once for all.
                await asyncio.sleep(self.settle_seconds)
            self.woken.clear()

    async def _still_allowed(self) -> bool:
        # Through the login session, not just the user row: signing out, or a password
        # change, ends the feed as it ends the page.
        if "session" in self.scope:
            user = await get_user(self.scope)
        else:  # a scope built without the session middleware (tests)
            user = await get_user_model().objects.filter(pk=self.user_id).afirst()
        if user is None or user.pk != self.user_id or not await permits(user, *self.needed):
            return False
        await self._read_permissions(user)
        return True


class OpsDashboardConsumer(StaffFeed):
    async def start(self) -> None:
        self.sent: dict[str, str] = {}

    async def push(self) -> None:
        """Sends the sections whose HTML changed since the last push (all, the first
        time)."""
        snap = await dashboard.snapshot()
        sections = dashboard.render(
            snap,
            can_operate=self.can_operate,
            can_cancel=self.can_cancel,
            can_watch=self.can_watch,
            can_end=self.can_end,
        )
        changed = {key: html for key, html in sections.items() if self.sent.get(key) != html}
        if changed:
            self.sent.update(changed)
            await self.send_json({"type": "ops.update", "html": changed})


class LiveCallConsumer(StaffFeed):
    """The live view's feed: ops.update for its sections (as the dashboard's), and
    live.timeline with the entries that are new or changed (key, HTML) and, when
    entries were inserted before others or went away, the whole order of keys."""

    needed = WATCH
    # After an event, how long to let its fellows arrive before reading (one read for a
    # burst: a turn's transcript comes as several events).
    settle_seconds = 0.1

    async def start(self) -> bool:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        if not SESSION_ID.fullmatch(self.session_id):
            return False
        self.sections: dict[str, str] = {}
        self.entries: dict[str, str] = {}
        self.renderer = live_call.Entries()
        self.level: int | None = None
        self.level_entries: list = []  # lines for the level's changes while watching
        # Listen before the first read: an event in between wakes a second one.
        self.group = events.session_group(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.ended_at: float | None = None
        return True

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def session_event(self, message: dict) -> None:
        self.wake()

    async def session_events(self, message: dict) -> None:
        self.wake()

    async def push(self) -> bool:
        call = await live_call.read(self.session_id)
        if call is None:
            await self.close(code=REFUSED)
            return False
        self._note_level(call)
        sections = live_call.render_sections(call, can_end=self.can_end, can_cancel=self.can_cancel)
        changed = {key: html for key, html in sections.items() if self.sections.get(key) != html}
        if changed:
            self.sections.update(changed)
            await self.send_json({"type": "ops.update", "html": changed})
        entries = sorted([*call.entries, *self.level_entries], key=lambda entry: entry.at)
        await self._send_timeline(self.renderer.render(entries))
        if not call.live:
            # What the call's last moments still write (its goodbye, as the sideband
            # drains) comes within the drain; then the page has the end.
            now = asyncio.get_running_loop().time()
            self.ended_at = self.ended_at or now
            if now - self.ended_at >= settings.SIDEBAND_DRAIN_SECONDS + PUSH_SECONDS:
                await self.send_json({"type": "live.ended"})
                await self.close(code=ENDED)
                return False
        return True

    def _note_level(self, call: live_call.Call) -> None:
        level = call.service.level
        if self.level is not None and level != self.level:
            start = call.session.connected_at or call.session.created_at
            self.level_entries.append(live_call.level_entry(timezone.now(), call.service, start))
        self.level = level

    async def _send_timeline(self, rendered: dict[str, str]) -> None:
        changed = [[key, html] for key, html in rendered.items() if self.entries.get(key) != html]
        before, after = list(self.entries), list(rendered)
        # Only appended: the page adds the new ones at the end. Otherwise, and on a new
        # feed (the page may hold what changed before it connected), it gets the order.
        reordered = not before or after[: len(before)] != before
        self.entries = rendered
        if changed or reordered:
            update = {"type": "live.timeline", "entries": changed}
            if reordered:
                update["order"] = after
            await self.send_json(update)
