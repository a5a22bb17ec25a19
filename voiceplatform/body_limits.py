"""Request bodies capped, and refused from their headers, before Django reads them.

Django reads a whole body (spooled to disk past FILE_UPLOAD_MAX_MEMORY_SIZE) before any
view runs, and `request.body` then loads it into memory: a view's own size check came
too late for a chunked body of any size, and so did its token check for a caller who may
not upload at all. This ASGI middleware knows each route's cap and its view's
before_body check (voiceplatform.api.api_view): it answers that check's error, or 413 as
soon as Content-Length or the bytes streamed so far pass the cap, without pulling the
rest of the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.urls import Resolver404, resolve
from django.utils.datastructures import CaseInsensitiveMapping

from voiceplatform.errors import ApiError, PayloadTooLarge, render

# The setting holding each named route's cap (read per request); every other route,
# the admin included, gets REQUEST_MAX_BYTES.
ROUTE_CAPS = {
    "session-create": "JSON_MAX_BYTES",
    "session-events": "JSON_MAX_BYTES",
    "session-end": "JSON_MAX_BYTES",
    "webhook": "JSON_MAX_BYTES",
    "tool-run": "JSON_MAX_BYTES",
    "sdp": "SDP_MAX_BYTES",
    "session-recording": "RECORDING_MAX_BYTES",
}


@dataclass(frozen=True)
class BodyRules:
    """What a route takes before its body is read: at most cap bytes, and (for the
    methods its view serves) headers its before_body check lets through."""

    cap: int
    methods: tuple[str, ...] = ()
    check: Callable[..., Any] | None = None
    url_kwargs: dict[str, Any] = field(default_factory=dict)

    def refusal(self, method: str, headers: Mapping[str, str]) -> ApiError | None:
        """The error the view's before_body check refuses these headers with, if any."""
        if self.check is None or method not in self.methods:
            return None
        try:
            self.check(headers, **self.url_kwargs)
        except ApiError as error:
            return error
        return None

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The body is larger than {self.cap} bytes.")


def body_rules(path: str) -> BodyRules:
    """The rules for a request body to path."""
    try:
        match = resolve(path)
    except Resolver404:
        return BodyRules(settings.REQUEST_MAX_BYTES)
    return BodyRules(
        cap=getattr(settings, ROUTE_CAPS.get(match.url_name or "", "REQUEST_MAX_BYTES")),
        methods=getattr(match.func, "api_methods", ()),
        check=getattr(match.func, "before_body", None),
        url_kwargs=match.kwargs,
    )


def body_cap(path: str) -> int:
    """The most bytes a request body to path may have."""
    return body_rules(path).cap


def header_map(raw: Iterable[tuple[bytes, bytes]]) -> Mapping[str, str]:
    """Raw (name, value) header pairs as a case-insensitive mapping, read as Django reads
    them into request.headers (latin-1; a repeated header's values joined with ",")."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return CaseInsensitiveMapping(headers)


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The largest Content-Length the request declares; None when it declares none it
    could mean (the streamed bytes are counted then)."""
    lengths = [
        int(value)
        for name, value in headers
        if name.lower() == b"content-length" and value.strip().isdigit()
    ]
    return max(lengths, default=None)


class BodySizeLimit:
    """Wraps the HTTP application; see the module docstring."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rules = body_rules(scope["path"])
        refusal = rules.refusal(scope["method"], header_map(scope.get("headers", [])))
        if refusal is not None:
            await _answer(send, render(refusal))
            return
        cap = rules.cap
        length = declared_length(scope.get("headers", []))
        if length is not None and length > cap:
            await _answer(send, render(rules.too_large()))
            return
        pulled = 0
        exceeded = started = False

        async def capped_receive() -> dict:
            nonlocal pulled, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                pulled += len(message.get("body", b""))
                if pulled > cap:
                    # To Django this is the client going away: it stops reading and
                    # answers nothing; the 413 is ours to send.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, capped_receive, watched_send)
        if exceeded and not started:
            await _answer(send, render(rules.too_large()))


async def _answer(send, response: HttpResponse) -> None:
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.items()
    ]
    headers.append((b"content-length", str(len(response.content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
