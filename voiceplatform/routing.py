"""WebSocket routes. Browser-facing routes check Origin and the Django login; the
simulator's sideband is server-to-server (no Origin) and checks its own key."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.urls import re_path

from ops_app.routing import websocket_urlpatterns as ops_routes
from sessions_app.routing import websocket_urlpatterns as session_routes


def websocket_router() -> URLRouter:
    routes = []
    if settings.SIMULATOR_ENABLED:
        # Imported only when mounted: a deployment on OpenAI never loads the simulator.
        from sessions_app import simulator

        routes += simulator.websocket_urlpatterns
    browser = AllowedHostsOriginValidator(
        AuthMiddlewareStack(URLRouter(session_routes + ops_routes))
    )
    routes.append(re_path(r"^", browser))
    return URLRouter(routes)
