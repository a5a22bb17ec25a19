"""Project-wide JSON handlers."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from voiceplatform.errors import error_response


async def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "alive"})


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, "bad_request", "The request could not be understood.")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(403, "forbidden", "This request is not allowed.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, "not_found", "No such endpoint.")


def server_error(request: HttpRequest) -> JsonResponse:
    return error_response(500, "internal_error", "Something went wrong on our side.")
