from django.urls import path

from tools_app import views

urlpatterns = [path("tools/<str:name>", views.run_tool, name="tool-run")]
