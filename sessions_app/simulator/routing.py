"""The sideband WebSocket route, at its full path (Channels routes are not mounted)."""

from django.urls import path

from .consumers import SidebandConsumer

websocket_urlpatterns = [path("simulator/v1/realtime", SidebandConsumer.as_asgi())]
