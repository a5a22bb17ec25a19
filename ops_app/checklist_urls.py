"""/ops/checklists/: the deployment checklists and their runs."""

from django.urls import path

from ops_app import checklist_views as views

app_name = "checklists"

urlpatterns = [
    path("", views.index, name="index"),
    path("<slug:slug>/start", views.start, name="start"),
    path("runs/<int:run_id>/", views.run_page, name="run"),
    path("runs/<int:run_id>/entries/<int:entry_id>", views.tick, name="tick"),
    path("runs/<int:run_id>/recheck", views.recheck, name="recheck"),
    path("runs/<int:run_id>/complete", views.complete, name="complete"),
]
