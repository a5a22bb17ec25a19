"""Logins to the admin (and so to /ops/, which signs in there): each login and logout,
each failure and each lockout (django-axes) leaves an audit event, never a password.

Failures and lockouts come from strangers, so they are bounded: per client address
(an IPv6 one by its /64), whatever the usernames tried, at most LOGIN_FAILURE_LIMIT
failures and one lockout are recorded in each LOGIN_LOCKOUT_MINUTES; a success from
that address starts the count of failures afresh. How fast an address may try at all
is LOGIN_RATE_PER_MINUTE (ops_app.middleware.LoginRateLimitMiddleware), whose first
refusal in each window is recorded too. So guessing with ever new usernames leaves a
handful of events, not one per guess."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from ops_app import audit
from ops_app.models import AuditEvent
from voiceplatform.api import client_ip, client_network


@receiver(user_logged_in, dispatch_uid="ops_app.logins.logged_in")
def record_login(sender, request: HttpRequest | None, user, **kwargs: Any) -> None:
    ip = _ip(request)
    audit.record(
        AuditEvent.Action.LOGIN,
        actor=user,
        target=audit.describe(user),
        ip=ip,
        details=_where(request),
    )
    # axes forgets this pair's failures on a success (AXES_RESET_ON_SUCCESS); the
    # address's next failures are recorded again.
    audit.forget_first(AuditEvent.Action.LOGIN_FAILED, _address_key(ip))


@receiver(user_logged_out, dispatch_uid="ops_app.logins.logged_out")
def record_logout(sender, request: HttpRequest | None, user, **kwargs: Any) -> None:
    if user is None:  # logging out without being logged in
        return
    audit.record(
        AuditEvent.Action.LOGOUT,
        actor=user,
        target=audit.describe(user),
        ip=_ip(request),
        details=_where(request),
    )


@receiver(user_login_failed, dispatch_uid="ops_app.logins.login_failed")
def record_login_failure(
    sender, credentials: dict, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Django has already masked the password in credentials; only the username is read.
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or "")[:150]
    ip = _ip(request)
    audit.record_first(
        AuditEvent.Action.LOGIN_FAILED,
        _address_key(ip),
        _lockout_seconds(),
        times=settings.LOGIN_FAILURE_LIMIT,
        actor_name=username,
        target=f"username {username}",
        ip=ip,
        details={"username": username, **_where(request)},
    )


@receiver(user_locked_out, dispatch_uid="ops_app.logins.locked_out")
def record_lockout(
    sender, request: HttpRequest | None, username: str | None, ip_address: str | None, **kwargs
) -> None:
    # axes says so again at each attempt while the lockout lasts: once is the news.
    username = str(username or "")[:150]
    ip = _ip(request) if request is not None else ip_address
    audit.record_first(
        AuditEvent.Action.LOCKED_OUT,
        _address_key(ip),
        _lockout_seconds(),
        actor_name=username,
        target=f"username {username}",
        ip=ip,
        details={
            "username": username,
            "failures": settings.LOGIN_FAILURE_LIMIT,
            "minutes": settings.LOGIN_LOCKOUT_MINUTES,
            **_where(request),
        },
    )


def locked_out_page(
    request: HttpRequest, original_response: Any = None, credentials: dict | None = None
) -> HttpResponse:
    """What a locked-out sign-in sees (AXES_LOCKOUT_CALLABLE): the admin's look, which
    username is paused from here, for how long, and what to do; 429 with Retry-After."""
    field = get_user_model().USERNAME_FIELD
    username = str((credentials or {}).get(field) or request.POST.get(field) or "")[:150]
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    context = {
        **admin.site.each_context(request),
        "title": "Signing in is paused",
        "username": username,
        "failures": settings.LOGIN_FAILURE_LIMIT,
        "minutes": minutes,
        "until": timezone.now() + timedelta(minutes=minutes),
    }
    response = render(request, "admin/locked_out.html", context, status=429)
    response["Retry-After"] = str(_lockout_seconds())
    return response


def _address_key(ip: str | None) -> str:
    # Counted per address as the limits count it (an IPv6 caller by its /64).
    return client_network(ip) or "unknown"


def _lockout_seconds() -> int:
    return settings.LOGIN_LOCKOUT_MINUTES * 60


def _ip(request: HttpRequest | None) -> str | None:
    return client_ip(request) if request is not None else None


def _where(request: HttpRequest | None) -> dict[str, str]:
    return {"path": request.path[:200]} if request is not None and request.path else {}
