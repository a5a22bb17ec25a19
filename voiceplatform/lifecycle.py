"""What a server process starts once it serves: daphne has no ASGI lifespan, so the
first call to the application starts the sideband sweep on the server's loop and
makes SIGTERM drain the process before it stops."""

from __future__ import annotations

from django.conf import settings

from ops_app import drain
from sessions_app import sideband


class StartsOnFirstCall:
    """ASGI middleware: runs started() once, on the server's running loop."""

    def __init__(self, app) -> None:
        self.app = app
        self.started = False

    async def __call__(self, scope, receive, send):
        if not self.started:
            self.started = True
            started()
        return await self.app(scope, receive, send)


def started() -> None:
    sideband.start_keeper()
    if settings.DRAIN_ON_SIGTERM:
        drain.on_sigterm(sideband.hand_over, settings.DRAIN_HANDOVER_SECONDS)
