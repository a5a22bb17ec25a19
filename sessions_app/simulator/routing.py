from django.urls import path

from sessions_app.simulator.consumers import SidebandConsumer

websocket_urlpatterns = [path("simulator/v1/realtime", SidebandConsumer.as_asgi())]
