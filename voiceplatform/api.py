"""Request plumbing shared by the JSON endpoints: method checks, bodies, callers' IPs."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest
from django.views.decorators.csrf import csrf_exempt

from voiceplatform.errors import (
    BadRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
)


def api_view(*methods: str) -> Callable:
    """An async JSON endpoint: wrong methods get a JSON 405. CSRF is not checked by
    middleware here: these endpoints authenticate with bearer tokens; a view that also
    accepts the login cookie checks CSRF itself (see sessions_app.callers)."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs):
            if request.method not in methods:
                raise MethodNotAllowed(
                    f"{request.method} is not allowed here; use {', '.join(methods)}.",
                    headers={"Allow": ", ".join(methods)},
                )
            return await view(request, *args, **kwargs)

        return csrf_exempt(wrapper)

    return decorate


def read_body(request: HttpRequest, *, max_bytes: int, content_types: tuple[str, ...]) -> bytes:
    """The raw body, after checking its declared type and size."""
    declared = request.headers.get("Content-Length") or "0"
    try:
        length = int(declared)
    except ValueError:
        raise BadRequest("Content-Length is not a number.") from None
    if length > max_bytes:
        raise PayloadTooLarge(f"The body is larger than {max_bytes} bytes.")
    body = request.body
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"The body is larger than {max_bytes} bytes.")
    if body and request.content_type not in content_types:
        raise UnsupportedMediaType(f"Send Content-Type: {' or '.join(content_types)}.")
    return body


def json_object(
    request: HttpRequest,
    *,
    allowed: set[str],
    required: set[str] = frozenset(),
    optional_body=False,
) -> dict:
    """The JSON object body; unknown fields are rejected, so typos do not pass silently."""
    body = read_body(
        request, max_bytes=settings.JSON_MAX_BYTES, content_types=("application/json",)
    )
    if not body.strip():
        if optional_body:
            return {}
        raise BadRequest("A JSON body is required.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.", code="invalid_json")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequest(f"Unknown field(s): {', '.join(unknown)}.", code="unknown_field")
    missing = sorted(required - set(data))
    if missing:
        raise BadRequest(f"Missing field(s): {', '.join(missing)}.", code="missing_field")
    return data


def client_ip(request: HttpRequest) -> str | None:
    if settings.USE_X_FORWARDED_FOR:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None


def bearer_token(request: HttpRequest) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""
