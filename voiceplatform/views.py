"""Project-wide JSON handlers."""

from __future__ import annotations

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.static import serve

from voiceplatform.errors import ErrorCode, error_response


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, ErrorCode.BAD_REQUEST, "The request could not be understood.")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(403, ErrorCode.FORBIDDEN, "This request is not allowed.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, ErrorCode.NOT_FOUND, "No such endpoint.")


def server_error(request: HttpRequest) -> JsonResponse:
    return error_response(500, ErrorCode.INTERNAL_ERROR, "Something went wrong on our side.")


@staff_member_required
def media(request: HttpRequest, path: str) -> HttpResponse:
    """Transcripts and recordings on local storage, for support staff only (on S3 the
    admin links are signed URLs instead)."""
    return serve(request, path, document_root=settings.MEDIA_ROOT)
