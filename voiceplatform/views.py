"""Project-wide JSON handlers."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from voiceplatform.errors import ErrorCode, error_response


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, ErrorCode.BAD_REQUEST, "The request could not be understood.")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(403, ErrorCode.FORBIDDEN, "This request is not allowed.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, ErrorCode.NOT_FOUND, "No such endpoint.")


def server_error(request: HttpRequest) -> JsonResponse:
    return error_response(500, ErrorCode.INTERNAL_ERROR, "Something went wrong on our side.")
