"""Django's ASGI handler, with two per-request costs taken out.

- Threads: Django gives every request a new thread for its synchronous work (the ORM,
  sync middleware), started when the request first needs it and joined when it ends.
  Here a request borrows one of REQUEST_THREADS long-lived threads instead (the one
  with the fewest requests in flight); a thread still runs one call at a time, so
  Django's per-thread database connection serves one call at a time, as before.
- Middleware hooks: Security, CSRF and X-Frame-Options are loaded as their
  voiceplatform.inline_middleware subclasses, whose hooks run on the event loop. The
  settings keep Django's names, which check --deploy looks for.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler

ON_THE_LOOP = {
    "django.middleware.security.SecurityMiddleware": "voiceplatform.inline_middleware.Security",
    "django.middleware.csrf.CsrfViewMiddleware": "voiceplatform.inline_middleware.Csrf",
    "django.middleware.clickjacking.XFrameOptionsMiddleware": (
        "voiceplatform.inline_middleware.XFrameOptions"
    ),
}


class Handler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._threads = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"request-{number}")
            for number in range(max(1, settings.REQUEST_THREADS))
        ]
        # Requests in flight on each thread: a new one goes where the fewest are, so
        # a slow admin page holds up as few others as it can.
        self._load = [0] * len(self._threads)

    def load_middleware(self, is_async: bool = False) -> None:
        load = base.import_string
        base.import_string = lambda path: load(ON_THE_LOOP.get(path, path))
        try:
            super().load_middleware(is_async)
        finally:
            base.import_string = load

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP here, not {scope['type']}.")
        least = min(range(len(self._load)), key=self._load.__getitem__)
        self._load[least] += 1
        try:
            async with ThreadSensitiveContext(executor=self._threads[least]):
                await self.handle(scope, receive, send)
        finally:
            self._load[least] -= 1
