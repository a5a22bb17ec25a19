"""Who is asking: a logged-in user, an API client with a key, or an anonymous browser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from sessions_app import journal, tokens
from sessions_app.models import ApiKey, VoiceSession
from voiceplatform.api import bearer_token
from voiceplatform.errors import ErrorCode, Forbidden, NotFound, Unauthorized


@dataclass(frozen=True)
class Caller:
    user_id: int | None = None
    api_key_id: int | None = None

    # A key is always an API-key caller, even when it belongs to a user: it gets the
    # keys' tool policy and limits, never its owner's.

    @property
    def kind(self) -> str:
        if self.api_key_id:
            return "api_key"
        return "user" if self.user_id else "anonymous"

    @property
    def rate_key(self) -> str | None:
        if self.api_key_id:
            return f"key:{self.api_key_id}"
        return f"user:{self.user_id}" if self.user_id else None


def _csrf_failure(request: HttpRequest) -> bool:
    # The view is CSRF-exempt for bearer callers; a caller relying on the login cookie
    # gets the same check Django's middleware would make.
    check = CsrfViewMiddleware(lambda r: None)
    return check.process_view(request, None, (), {}) is not None


async def _identified(request: HttpRequest, *, cookie_writes: bool) -> Caller | None:
    """The API key or signed-in user asking (401 for a bad key), None for anonymous.
    cookie_writes: the request changes something, so a login cookie needs its CSRF token."""
    raw_key = bearer_token(request.headers)
    if raw_key:
        key = await ApiKey.objects.active().filter(key_hash=ApiKey.hash(raw_key)).afirst()
        if key is None:
            raise Unauthorized(
                "The API key is not valid or was revoked.", code=ErrorCode.INVALID_API_KEY
            )
        await ApiKey.objects.filter(pk=key.pk).aupdate(last_used_at=timezone.now())
        return Caller(user_id=key.user_id, api_key_id=key.pk)
    user = await request.auser()
    if user.is_authenticated:
        if cookie_writes and _csrf_failure(request):
            raise Forbidden("CSRF token missing or incorrect.", code=ErrorCode.CSRF_FAILED)
        return Caller(user_id=user.pk)
    return None


async def session_creator(request: HttpRequest) -> Caller:
    """The caller of /session, or 401/403."""
    caller = await _identified(request, cookie_writes=True)
    if caller is not None:
        return caller
    if settings.SESSION_ALLOW_ANONYMOUS:
        return Caller()
    raise Unauthorized(
        "Log in or send an API key to start a session.", code=ErrorCode.LOGIN_REQUIRED
    )


async def session_owner(request: HttpRequest) -> Caller:
    """A caller who may own sessions (an API key or a signed-in user), or 401:
    anonymous sessions belong to nobody."""
    caller = await _identified(request, cookie_writes=False)
    if caller is None:
        raise Unauthorized(
            "Log in or send an API key to see your conversations.",
            code=ErrorCode.LOGIN_REQUIRED,
        )
    return caller


def token_session_id(headers: Mapping[str, str], session_id: str | None = None) -> str:
    """The session the bearer token in headers is bound to; it must be the one named in
    the URL (and in X-Voice-Session-Id, when sent) and must not have outlived its
    lifetime. Headers alone, no database: an api_view's before_body check."""
    token_session = tokens.session_id_from(bearer_token(headers))
    named = [n for n in (session_id, headers.get("X-Voice-Session-Id")) if n]
    if any(name != token_session for name in named):
        raise Forbidden(
            "The session token belongs to another session.", code=ErrorCode.WRONG_SESSION
        )
    return token_session


async def session_for_token(request: HttpRequest, session_id: str | None = None) -> VoiceSession:
    """The session the bearer token is bound to (token_session_id), which must exist."""
    token_session = token_session_id(request.headers, session_id)
    session = await journal.lookup(token_session)
    if session is None:
        raise NotFound("No such session.", code=ErrorCode.SESSION_NOT_FOUND)
    return session
