"""The browser's SDP offer as /sdp takes it: UTF-8 text that looks like a session
description, with CRLF line ends (what the upstream expects, whatever the page sent)."""

from __future__ import annotations

from voiceplatform.errors import BadRequest, ErrorCode


def offer_text(body: bytes) -> str:
    """The offer to forward upstream, or 400 invalid_sdp."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The SDP offer is not UTF-8 text.", code=ErrorCode.INVALID_SDP) from None
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if not text.startswith("v=0") or "\r\nm=" not in text:
        raise BadRequest(
            "The body is not an SDP offer (v=0 ... m=...).", code=ErrorCode.INVALID_SDP
        )
    return text
