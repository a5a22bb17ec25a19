from django.urls import path

from sessions_app import pages, views

urlpatterns = [
    path("", pages.client, name="client"),
    path("session", views.create_session, name="session-create"),
    path("sessions", views.list_sessions, name="session-list"),
    path("sdp", views.sdp, name="sdp"),
    path("session/<str:session_id>/events", views.session_events, name="session-events"),
    path("session/<str:session_id>/end", views.end_session, name="session-end"),
    path("session/<str:session_id>/recording", views.upload_recording, name="session-recording"),
    path("webhook/<str:provider>", views.webhook, name="webhook"),
]
