"""WebSocket routes. Browser-facing routes check Origin and the Django login; the
simulator's sideband is server-to-server (no Origin) and checks its own key."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.urls import re_path

from sessions_app.routing import websocket_urlpatterns as session_routes


def websocket_router() -> URLRouter:
    routes = []
    if settings.SIMULATOR_ENABLED:
        from sessions_app.simulator.routing import websocket_urlpatterns as simulator_routes

        routes += simulator_routes
    browser = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(session_routes)))
    routes.append(re_path(r"^", browser))
    return URLRouter(routes)
