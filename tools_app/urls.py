from django.urls import path

from tools_app import views

urlpatterns = [
    path("tools/", views.list_tools, name="tools"),
    path("tools/<str:name>", views.run_tool, name="tool-run"),
    path("session/<str:session_id>/tasks/<str:task_id>", views.task_detail, name="task"),
    path(
        "session/<str:session_id>/tasks/<str:task_id>/cancel",
        views.cancel_task,
        name="task-cancel",
    ),
]
