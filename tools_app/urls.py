from django.urls import path

from tools_app import views

urlpatterns = [
    path("tools/", views.list_tools, name="tools"),
    path("tools/<str:name>", views.run_tool, name="tool-run"),
]
