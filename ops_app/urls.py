"""/ops/: the operations dashboard and its switches. Deployment checklists mount their
pages under /ops/checklists/ (the dashboard's navigation links there)."""

from __future__ import annotations

from django.urls import path

from ops_app import views

app_name = "ops"

urlpatterns = [
    path("", views.dashboard_page, name="dashboard"),
    path("maintenance", views.maintenance_on, name="maintenance-on"),
    path("maintenance/off", views.maintenance_off, name="maintenance-off"),
    path("level", views.force_level, name="level-force"),
    path("level/release", views.release_level, name="level-release"),
    path("breakers/<str:name>/reset", views.reset_breaker, name="breaker-reset"),
    path("tasks/<str:task_id>/cancel", views.cancel_task, name="task-cancel"),
    path("sessions/<str:session_id>/live", views.live_call_page, name="live-call"),
    path("sessions/<str:session_id>/end", views.end_call, name="end-call"),
]
