"""Logins to the admin (and so to /ops/, which signs in there): each login and logout,
each failure and each lockout (django-axes) leaves an audit event, never a password.

Failures and lockouts come from strangers, so they are bounded: per username and
address, at most LOGIN_FAILURE_LIMIT failures and one lockout are recorded in each
LOGIN_LOCKOUT_MINUTES (after that axes refuses the attempts unread anyway)."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

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
    # axes forgets this pair's failures on a success (AXES_RESET_ON_SUCCESS), so the
    # next ones are recorded again.
    audit.forget_first(AuditEvent.Action.LOGIN_FAILED, _failure_key(user.get_username(), ip))


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
        _failure_key(username, ip),
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
        _failure_key(username, ip),
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


def _failure_key(username: str, ip: str | None) -> str:
    # Counted per address as axes counts them (an IPv6 caller by its /64).
    return f"{username}\0{client_network(ip)}"


def _lockout_seconds() -> int:
    return settings.LOGIN_LOCKOUT_MINUTES * 60


def _ip(request: HttpRequest | None) -> str | None:
    return client_ip(request) if request is not None else None


def _where(request: HttpRequest | None) -> dict[str, str]:
    return {"path": request.path[:200]} if request is not None and request.path else {}
