"""HTTP routes, relative to where the simulator is mounted (`/simulator/`)."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("v1/realtime/client_secrets", views.client_secrets),
    path("v1/responses", views.create_response),
    path("v1/realtime/calls", views.calls),
    path(
        "v1/realtime/calls/<str:call_id>/<str:action>",
        views.call_action,
    ),
    path("health/live", views.live),
    path("_control/fault", views.control_fault),
    path("_control/reset", views.control_reset),
    path("_control/webhook", views.control_webhook),
    path("_control/calls/<str:call_id>", views.control_call),
    path("_control/traffic", views.control_traffic),
]
