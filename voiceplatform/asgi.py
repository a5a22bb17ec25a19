"""ASGI entry point: Django for HTTP, Channels for WebSockets."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")
django.setup(set_prefix=False)

from voiceplatform import tracing  # noqa: E402

# Before anything connects to Redis or PostgreSQL: their clients are traced from here.
tracing.setup(tracing.WEB)

from voiceplatform.handler import Handler  # noqa: E402

django_asgi_app = Handler()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from voiceplatform import daphne_limits, gctuning, periodic, startup  # noqa: E402
from voiceplatform.body_limits import BodySizeLimit  # noqa: E402
from voiceplatform.lifecycle import StartsOnFirstCall  # noqa: E402
from voiceplatform.routing import websocket_router  # noqa: E402

# Bodies are capped per route before Django reads them. The first call starts the
# sideband sweep and the SIGTERM drain (there is no lifespan under daphne), outside any
# request's trace. With tracing on, each HTTP request is a span (WebSockets are not).
application = StartsOnFirstCall(
    ProtocolTypeRouter(
        {
            "http": tracing.traced_http(BodySizeLimit(django_asgi_app)),
            "websocket": websocket_router(),
        }
    )
)

daphne_limits.install()
startup.log_backends()
periodic.start_in_process()
gctuning.tune_after_startup()
