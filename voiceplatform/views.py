"""Project-wide JSON handlers, and the API's own description."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from voiceplatform import openapi
from voiceplatform.api import api_view
from voiceplatform.errors import ErrorCode, error_response

OPENAPI_MAX_AGE_SECONDS = 3600


@api_view("GET")
async def openapi_document(request: HttpRequest) -> HttpResponse:
    """GET /api/openapi.json: public, the same for everyone, so caches may keep it."""
    response = HttpResponse(openapi.document_bytes(), content_type="application/json")
    patch_cache_control(response, public=True, max_age=OPENAPI_MAX_AGE_SECONDS)
    return response


@require_safe
async def favicon(request: HttpRequest) -> HttpResponse:
    """GET /favicon.ico, which browsers ask for on pages that name no icon (the admin's):
    our icon, not a 404 in the log."""
    return HttpResponsePermanentRedirect(static("voiceplatform/favicon.svg"))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, ErrorCode.BAD_REQUEST, "The request could not be understood.")


# Pages staff read in a browser: a refusal there is a page in the admin's look, saying
# who is signed in and what to do; the API's refusals stay JSON.
STAFF_PAGES = ("/admin/", "/ops/")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(STAFF_PAGES):
        context = {**admin.site.each_context(request), "title": "Not allowed"}
        return render(request, "admin/refused.html", context, status=403)
    return error_response(403, ErrorCode.FORBIDDEN, "This request is not allowed.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, ErrorCode.NOT_FOUND, "No such endpoint.")


def server_error(request: HttpRequest) -> JsonResponse:
    return error_response(500, ErrorCode.INTERNAL_ERROR, "Something went wrong on our side.")
