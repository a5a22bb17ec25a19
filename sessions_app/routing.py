from django.urls import path

from sessions_app.consumers import SessionEventsConsumer

websocket_urlpatterns = [
    path("ws/sessions/<str:session_id>/", SessionEventsConsumer.as_asgi()),
]
