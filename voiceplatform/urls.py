"""HTTP routes: the voice API at the root, the admin, the operations dashboard, the
simulator when enabled."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from ops_app import exporter, probes
from sessions_app import media
from voiceplatform import views

# The admin's pages are wide tables and timelines: the breadcrumbs and the index lead
# everywhere the side bar would, without taking a quarter of a laptop's screen.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ops/checklists/", include("ops_app.checklist_urls")),
    path("ops/", include("ops_app.urls")),
    path("", include("sessions_app.urls")),
    path("", include("tools_app.urls")),
    path("metrics", exporter.metrics, name="metrics"),
    path("health", probes.overall, name="health"),
    path("health/live", probes.live, name="health-live"),
    path("health/ready", probes.ready, name="health-ready"),
    path("api/openapi.json", views.openapi_document, name="openapi"),
    path("favicon.ico", views.favicon, name="favicon"),
]

if not settings.AWS_STORAGE_BUCKET_NAME:
    # Only the files sessions own (transcripts/, recordings/), to staff who may view
    # sessions.
    urlpatterns.append(
        re_path(r"^media/(?P<path>(?:transcripts|recordings)/.+)$", media.session_file)
    )

if settings.SIMULATOR_ENABLED:
    urlpatterns += [
        path("simulator", RedirectView.as_view(url="/simulator/", permanent=True)),
        path("simulator/", include("sessions_app.simulator")),
    ]

handler400 = "voiceplatform.views.bad_request"
handler403 = "voiceplatform.views.forbidden"
handler404 = "voiceplatform.views.not_found"
handler500 = "voiceplatform.views.server_error"
