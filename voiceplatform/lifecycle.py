"""What a server process starts once it serves: daphne has no ASGI lifespan, so the
first call to the application starts the sideband sweep on the server's loop and
makes SIGTERM drain the process before it stops. Until that start work has run, a
server process is starting: /health/ready says so (a process not served through this
application, e.g. a test client or a management command, is never starting)."""

from __future__ import annotations

import structlog
from django.conf import settings

from ops_app import drain
from sessions_app import sideband

log = structlog.get_logger(__name__)

_starting = False  # a server process whose start work has not run (or failed) yet


class StartsOnFirstCall:
    """ASGI middleware: runs started() once, on the server's running loop; a start that
    fails is tried again on the next call, and the process stays starting till then.
    Every HTTP request goes through it: a SIGTERM drain lets those in flight finish."""

    def __init__(self, app) -> None:
        self.app = app
        self.started = False

    async def __call__(self, scope, receive, send):
        global _starting
        if not self.started:
            _starting = True
            try:
                started()
            except Exception:
                log.exception("start_failed")
            else:
                self.started = True
                _starting = False
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with drain.answering():
            return await self.app(scope, receive, send)


def is_starting() -> bool:
    return _starting


def started() -> None:
    sideband.start_keeper()
    if settings.DRAIN_ON_SIGTERM:
        drain.on_sigterm(sideband.hand_over, settings.DRAIN_HANDOVER_SECONDS)
