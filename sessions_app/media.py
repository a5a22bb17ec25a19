"""Transcript exports and recordings on local storage, for staff who may view sessions
(on S3 the admin links are signed, expiring URLs instead)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control
from django.views.static import serve

from sessions_app.models import VoiceSession
from voiceplatform.errors import Forbidden, NotFound

VIEW_SESSIONS = "sessions_app.view_voicesession"


@staff_member_required
def session_file(request: HttpRequest, path: str) -> HttpResponse:
    """One file a session owns; being staff is not enough, the file is part of the
    session's history, so it takes the permission to view sessions."""
    if not request.user.has_perm(VIEW_SESSIONS):
        raise Forbidden("Viewing session files needs the permission to view sessions.")
    # Only names a session points at: nothing else under MEDIA_ROOT is reachable.
    if not VoiceSession.objects.owning_file(path).exists():
        raise NotFound("No such session file.")
    response = serve(request, path, document_root=settings.MEDIA_ROOT)
    patch_cache_control(response, private=True)
    return response
