"""The realtime simulator: a local stand-in for OpenAI's Realtime API.

Wire-compatible with the official SDK: the Responses API (the agents' model and the
post-call summaries', played by a script: responses.py), client secrets, WebRTC calls
answered by a real aiortc peer, hangup/accept/reject/refer, the sideband WebSocket,
signed webhooks, and a scripted, deterministic conversation on the `oai-events` data
channel. Failure modes
(5xx, 429, slow) are switched on through its control endpoints, which answer only the
server key from this machine (never a request that came through a proxy) and sign
webhooks for loopback URLs only.

The package is sealed: it imports Django, third-party libraries and its own modules,
never the product. The product uses it only through these names:

- `urlpatterns`: the HTTP routes (the API, its control endpoints and `health/live`), to
  mount at `simulator/`: `path("simulator/", include("sessions_app.simulator"))`.
- `websocket_urlpatterns`: the sideband at `simulator/v1/realtime`, for a Channels
  `URLRouter` at the root.
- `application`: the simulator on its own, an ASGI app serving both of the above at the
  same paths; what `manage.py simulator` runs.
- `sign_webhook`: the Standard Webhooks headers the simulator signs its events with,
  for callers that post webhooks of their own.

Settings read at request time: `SIMULATOR_API_KEY`, `SIMULATOR_WEBHOOK_SECRET`,
`SIMULATOR_SPEECH_AFTER_SECONDS`, `SIMULATOR_ICE_LOOPBACK_ONLY`.
"""

from .asgi import application
from .routing import websocket_urlpatterns
from .urls import urlpatterns
from .views import sign_webhook

__all__ = ["application", "sign_webhook", "urlpatterns", "websocket_urlpatterns"]
