"""Session tokens: signed, bound to one session, expiring with it."""

from __future__ import annotations

from django.conf import settings
from django.core import signing

from voiceplatform.errors import ErrorCode, Unauthorized

_SALT = "voiceplatform.session-token"


def issue(session_id: str) -> str:
    return signing.dumps({"sid": session_id}, salt=_SALT, compress=False)


def session_id_from(token: str) -> str:
    """The session a token was issued for; 401 when it is forged or older than a session
    may live."""
    if not token:
        raise Unauthorized(
            "Send Authorization: Bearer <session_token>.", code=ErrorCode.MISSING_TOKEN
        )
    try:
        data = signing.loads(token, salt=_SALT, max_age=settings.SESSION_MAX_SECONDS)
    except signing.SignatureExpired:
        raise Unauthorized("The session token has expired.", code=ErrorCode.TOKEN_EXPIRED) from None
    except signing.BadSignature:
        raise Unauthorized(
            "The session token is not valid.", code=ErrorCode.INVALID_TOKEN
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
        raise Unauthorized("The session token is not valid.", code=ErrorCode.INVALID_TOKEN)
    return data["sid"]
