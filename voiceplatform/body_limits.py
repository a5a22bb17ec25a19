"""Request bodies capped before Django reads them.

Django reads a whole body (spooled to disk past FILE_UPLOAD_MAX_MEMORY_SIZE) before any
view runs, and `request.body` then loads it into memory: a view's own size check came
too late for a chunked body of any size. This ASGI middleware knows each route's cap and
answers 413 as soon as Content-Length, or the bytes streamed so far, pass it, without
pulling the rest of the body.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import Resolver404, resolve

from voiceplatform.errors import ErrorCode, error_response

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


def body_cap(path: str) -> int:
    """The most bytes a request body to path may have."""
    try:
        name = resolve(path).url_name
    except Resolver404:
        name = None
    return getattr(settings, ROUTE_CAPS.get(name or "", "REQUEST_MAX_BYTES"))


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
        cap = body_cap(scope["path"])
        length = declared_length(scope.get("headers", []))
        if length is not None and length > cap:
            await _refuse(send, cap)
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
            await _refuse(send, cap)


async def _refuse(send, cap: int) -> None:
    response = error_response(
        413, ErrorCode.PAYLOAD_TOO_LARGE, f"The body is larger than {cap} bytes."
    )
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.items()
    ]
    headers.append((b"content-length", str(len(response.content)).encode()))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
