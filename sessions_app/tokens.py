"""Session tokens: signed, bound to one session, expiring with it.

The parts are joined with "." (not signing's ":"), so a token is made of HTTP token
characters only and can travel as a WebSocket subprotocol, `bearer.<token>`.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core import signing

from voiceplatform.errors import ErrorCode, Unauthorized

_SALT = "voiceplatform.session-token"
# What an issued token is made of (URL-safe base64 and the separators), with room to
# spare in length: anything else is refused before it is hashed. A token may come from a
# WebSocket message, whose JSON can carry characters no header could.
_SHAPE = re.compile(r"[A-Za-z0-9_\-.:]{1,1024}")


def _signer(token: str = "") -> signing.TimestampSigner:
    # Tokens issued before the separator changed (":") stay good until they expire, so
    # live sessions outlast the deploy.
    return signing.TimestampSigner(salt=_SALT, sep=":" if ":" in token else ".")


def issue(session_id: str) -> str:
    return _signer().sign_object({"sid": session_id})


def session_id_from(token: str) -> str:
    """The session a token was issued for; 401 when it is forged or older than a session
    may live."""
    if not token:
        raise Unauthorized(
            "Send Authorization: Bearer <session_token>.", code=ErrorCode.MISSING_TOKEN
        )
    if not _SHAPE.fullmatch(token):
        raise Unauthorized("The session token is not valid.", code=ErrorCode.INVALID_TOKEN)
    try:
        data = _signer(token).unsign_object(token, max_age=settings.SESSION_MAX_SECONDS)
    except signing.SignatureExpired:
        raise Unauthorized("The session token has expired.", code=ErrorCode.TOKEN_EXPIRED) from None
    except signing.BadSignature:
        raise Unauthorized(
            "The session token is not valid.", code=ErrorCode.INVALID_TOKEN
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
        raise Unauthorized("The session token is not valid.", code=ErrorCode.INVALID_TOKEN)
    return data["sid"]
