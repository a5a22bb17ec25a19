"""HTTP routes: the voice API at the root, the admin, the simulator when enabled."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from voiceplatform import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ops/checklists/", include("ops_app.checklist_urls")),
    path("", include("sessions_app.urls")),
    path("", include("tools_app.urls")),
    path("", include("django_prometheus.urls")),
    path("health/live", views.live),
]

if not settings.AWS_STORAGE_BUCKET_NAME:
    urlpatterns.append(re_path(r"^media/(?P<path>.+)$", views.media))

if settings.SIMULATOR_ENABLED:
    urlpatterns.append(path("simulator/", include("sessions_app.simulator")))

handler400 = "voiceplatform.views.bad_request"
handler403 = "voiceplatform.views.forbidden"
handler404 = "voiceplatform.views.not_found"
handler500 = "voiceplatform.views.server_error"
