from django.urls import path

from ops_app.consumers import LiveCallConsumer, OpsDashboardConsumer

websocket_urlpatterns = [
    path("ws/ops/", OpsDashboardConsumer.as_asgi()),
    path("ws/ops/sessions/<str:session_id>/live/", LiveCallConsumer.as_asgi()),
]
