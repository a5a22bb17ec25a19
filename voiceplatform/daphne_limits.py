"""Request bodies capped while daphne receives them.

Daphne (on Twisted) stores a whole request body before it calls the application, and
then queues all of it for the application at once: the ASGI cap (body_limits) stops
Django from reading past a route's limit, but a 300 MiB chunked POST still cost the
server 300 MiB first. So daphne's request class is taught the same caps: a declared
Content-Length over the route's cap is answered 413 before any body is read, and a
streamed body is cut off with 413 the moment it passes the cap (the connection closes;
nothing more is read or kept). Installed once, when the ASGI application is built.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import structlog

from voiceplatform.body_limits import body_cap
from voiceplatform.errors import ErrorCode, error_response

log = structlog.get_logger(__name__)


def install() -> bool:
    """Patches daphne's WebRequest (once); False when daphne is not what serves us."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:
        return False
    if getattr(WebRequest, "voice_body_caps", False):
        return True
    got_length, content_chunk = WebRequest.gotLength, WebRequest.handleContentChunk
    process = WebRequest.process

    def gotLength(self, length):  # noqa: N802 (Twisted's name)
        path = unquote(urlsplit(getattr(self.channel, "_path", b"/").decode("latin-1")).path)
        self.voice_cap, self.voice_seen, self.voice_refused = body_cap(path), 0, False
        got_length(self, length)
        if length is not None and length > self.voice_cap:
            _refuse(self)

    def handleContentChunk(self, data):  # noqa: N802 (Twisted's name)
        if self.voice_refused:
            return
        self.voice_seen += len(data)
        if self.voice_seen > self.voice_cap:
            _refuse(self)
            return
        content_chunk(self, data)

    def guarded_process(self):
        if getattr(self, "voice_refused", False):
            return None  # answered already; the body is gone
        return process(self)

    WebRequest.gotLength = gotLength
    WebRequest.process = guarded_process
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.voice_body_caps = True
    return True


def _refuse(request) -> None:
    """Answers 413 on the raw connection and closes it: the request never reaches the
    application, and what it had stored is dropped."""
    request.voice_refused = True
    response = error_response(
        413, ErrorCode.PAYLOAD_TOO_LARGE, f"The body is larger than {request.voice_cap} bytes."
    )
    head = (
        "HTTP/1.1 413 Payload Too Large\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(response.content)}\r\n"
        "Connection: close\r\n\r\n"
    )
    log.warning("body_too_large", cap=request.voice_cap)
    transport = request.channel.transport
    transport.write(head.encode("latin-1") + response.content)
    request.content.close()
    transport.loseConnection()
