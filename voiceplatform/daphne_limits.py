"""Request bodies capped while daphne receives them.

Daphne (on Twisted) stores a whole request body before it calls the application, and
then queues all of it for the application at once: the ASGI cap (body_limits) stops
Django from reading past a route's limit, but a 300 MiB chunked POST still cost the
server 300 MiB first. So daphne's request class is taught the same rules: a request its
view's before_body check refuses (an upload without a valid token) gets that error, and
a declared Content-Length over the route's cap gets 413, both once the headers are in
and before any body is read; a streamed body is cut off with 413 the moment it passes
the cap (the connection closes; nothing more is read or kept). Installed once, when the
ASGI application is built.

A request refused from its headers may be one whose client writes its whole body before
it reads: closing at once would reset the connection under the answer it has not read
yet. So the answer goes out, our side of the connection closes, and up to LINGER_BYTES
of a body still coming are read and dropped (nothing is kept) before the rest is cut off.
"""

from __future__ import annotations

import io
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

import structlog

from voiceplatform.body_limits import body_rules, header_map
from voiceplatform.errors import ApiError, PayloadTooLarge, render

log = structlog.get_logger(__name__)

LINGER_BYTES = 64 * 1024


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
        # The request line and the headers are in; no byte of the body is.
        path = unquote(urlsplit(getattr(self.channel, "_path", b"/").decode("latin-1")).path)
        rules = body_rules(path)
        self.voice_rules, self.voice_seen, self.voice_refused = rules, 0, False
        self.voice_dropped = 0
        got_length(self, length)
        method = getattr(self.channel, "_command", b"").decode("latin-1")
        headers = header_map(
            (name, value)
            for name, values in self.requestHeaders.getAllRawHeaders()
            for value in values
        )
        refusal = rules.refusal(method, headers)
        if refusal is not None:
            _refuse(self, refusal, linger=True)
        elif length is not None and length > rules.cap:
            _refuse(self, rules.too_large())

    def handleContentChunk(self, data):  # noqa: N802 (Twisted's name)
        if self.voice_refused:
            self.voice_dropped += len(data)
            if self.voice_dropped > LINGER_BYTES:
                self.channel.transport.loseConnection()
            return
        self.voice_seen += len(data)
        if self.voice_seen > self.voice_rules.cap:
            _refuse(self, self.voice_rules.too_large())
            return
        content_chunk(self, data)

    def guarded_process(self):
        if getattr(self, "voice_refused", False):
            self.channel.transport.loseConnection()  # answered already; the body is gone
            return None
        return process(self)

    WebRequest.gotLength = gotLength
    WebRequest.process = guarded_process
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.voice_body_caps = True
    return True


def _refuse(request, error: ApiError, *, linger: bool = False) -> None:
    """Answers error on the raw connection and closes it (our side only, when it
    lingers): the request never reaches the application, and what it had stored is
    dropped."""
    request.voice_refused = True
    response = render(error)
    head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}"]
    head += [f"{name}: {value}" for name, value in response.items()]
    head += [f"Content-Length: {len(response.content)}", "Connection: close", "", ""]
    if isinstance(error, PayloadTooLarge):
        log.warning("body_too_large", cap=request.voice_rules.cap)
    else:
        log.warning("body_refused_before_reading", status=error.status, code=error.code)
    transport = request.channel.transport
    transport.write("\r\n".join(head).encode("latin-1") + response.content)
    request.content.close()
    request.content = io.BytesIO()  # empty: what still comes is dropped, not stored
    if linger and hasattr(transport, "loseWriteConnection"):
        transport.loseWriteConnection()
    else:
        transport.loseConnection()
