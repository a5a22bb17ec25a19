from django.urls import path

from ops_app.consumers import OpsDashboardConsumer

websocket_urlpatterns = [
    path("ws/ops/", OpsDashboardConsumer.as_asgi()),
]
