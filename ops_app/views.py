"""The operations dashboard /ops/: thin views over ops_app.actions. Looking needs
staff with ops_app.view_operations, switching also ops_app.operate, cancelling a
caller's task also tools_app.cancel_task (ops_app.access, checked at each request);
every switch is a POST form
(CSRF-checked: it rides on the login cookie) answered with a redirect to the page."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from ops_app import actions, dashboard, live_call
from ops_app.access import CANCEL_TASK, END_CALL, OPERATE, READ_SESSIONS, VIEW, WATCH, permits
from ops_app.forms import EndCallForm, ForcedLevelForm, MaintenanceForm
from voiceplatform.api import client_ip
from voiceplatform.errors import ApiError, BadRequest, Conflict, ErrorCode, NotFound


def operations_view(method: str, *, operate: bool = False, also: tuple[str, ...] = ()) -> Callable:
    """Anonymous callers go to the admin login; signed-in ones without the permissions
    (viewing, operating if operate, and those in also) or no longer staff get the 403
    page. The view receives the signed-in user."""
    needed = (VIEW, OPERATE, *also) if operate else (VIEW, *also)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            user = await request.auser()
            if not user.is_authenticated:
                return redirect_to_login(reverse("ops:dashboard"), reverse("admin:login"))
            if not await permits(user, *needed):
                return render(request, "ops/forbidden.html", {"operator": user}, status=403)
            if request.method != method:
                return HttpResponseNotAllowed([method])
            return await view(request, user, *args, **kwargs)

        return wrapper

    return decorate


async def _page(
    request: HttpRequest,
    user: Any,
    *,
    status: int = 200,
    forms: dict[str, Any] | None = None,
    error: str = "",
) -> HttpResponse:
    can_operate = await permits(user, OPERATE)
    can_cancel = await permits(user, CANCEL_TASK)
    snap = await dashboard.snapshot()
    sections = dashboard.render(
        snap,
        can_operate=can_operate,
        can_cancel=can_cancel,
        can_watch=await permits(user, READ_SESSIONS),
        can_end=await permits(user, END_CALL),
        request=request,
        forms=forms,
    )
    context = {
        "operator": user,
        "can_operate": can_operate,
        "can_cancel": can_cancel,
        "error": error,
        "sections": sections,
    }
    return render(request, "ops/dashboard.html", context, status=status)


def _done(request: HttpRequest, message: str) -> HttpResponse:
    """Back to the page the form came from (a live view), or the dashboard."""
    messages.success(request, message)
    return redirect(_back_to(request) or "ops:dashboard")


@operations_view("GET")
async def dashboard_page(request: HttpRequest, user: Any) -> HttpResponse:
    return await _page(request, user)


@operations_view("POST", operate=True)
async def maintenance_on(request: HttpRequest, user: Any) -> HttpResponse:
    form = MaintenanceForm(request.POST)
    if not form.is_valid():
        return await _page(request, user, status=400, forms={"maintenance": form})
    ended = await actions.maintenance_on(
        actor=user,
        message=form.cleaned_data["message"],
        eta=form.cleaned_data["eta"],
        end_live=form.cleaned_data["end_live"],
        ip=client_ip(request),
    )
    ended_text = f" {ended} live session(s) ended." if form.cleaned_data["end_live"] else ""
    return _done(request, f"Maintenance is on.{ended_text}")


@operations_view("POST", operate=True)
async def maintenance_off(request: HttpRequest, user: Any) -> HttpResponse:
    await actions.maintenance_off(actor=user, ip=client_ip(request))
    return _done(request, "Maintenance is off.")


# Which form field an action's refusal is about.
_LEVEL_FIELDS = {
    ErrorCode.INVALID_LEVEL: "level",
    ErrorCode.INVALID_REASON: "reason",
    ErrorCode.INVALID_HOURS: "hours",
}


@operations_view("POST", operate=True)
async def force_level(request: HttpRequest, user: Any) -> HttpResponse:
    form = ForcedLevelForm(request.POST)
    if form.is_valid():
        try:
            await actions.force_level(
                actor=user,
                level=form.cleaned_data["level"],
                reason=form.cleaned_data["reason"],
                hours=form.cleaned_data["hours"],
                ip=client_ip(request),
            )
        except BadRequest as refused:
            form.add_error(_LEVEL_FIELDS.get(refused.code), refused.message)
    if not form.is_valid():
        return await _page(request, user, status=400, forms={"level": form})
    return _done(request, f"Level {form.cleaned_data['level']} is forced.")


@operations_view("POST", operate=True)
async def release_level(request: HttpRequest, user: Any) -> HttpResponse:
    await actions.release_level(actor=user, ip=client_ip(request))
    return _done(request, "The forced level is released.")


@operations_view("POST", operate=True)
async def reset_breaker(request: HttpRequest, user: Any, name: str) -> HttpResponse:
    try:
        await actions.reset_breaker(actor=user, name=name, ip=client_ip(request))
    except BadRequest as refused:
        return await _page(request, user, status=400, error=refused.message)
    return _done(request, f"The {name} breaker is reset (closed).")


@operations_view("POST", also=(CANCEL_TASK,))
async def cancel_task(request: HttpRequest, user: Any, task_id: str) -> HttpResponse:
    try:
        task = await actions.cancel_task(actor=user, task_id=task_id, ip=client_ip(request))
    except (NotFound, Conflict) as refused:
        return await _refused(request, user, refused)
    return _done(request, f"Task {task.pk} is being cancelled: its worker stops it.")


async def _live_page(
    request: HttpRequest,
    user: Any,
    session_id: str,
    *,
    status: int = 200,
    error: str = "",
    form: EndCallForm | None = None,
) -> HttpResponse:
    call = await live_call.read(session_id)
    if call is None:
        return await _page(
            request, user, status=404, error=f"There is no session {session_id[:40]!r}."
        )
    can_end = await permits(user, END_CALL)
    can_cancel = await permits(user, CANCEL_TASK)
    context = {
        "operator": user,
        "session": call.session,
        "can_end": can_end,
        "can_cancel": can_cancel,
        "error": error,
        "sections": live_call.render_sections(
            call, can_end=can_end, can_cancel=can_cancel, request=request, form=form
        ),
        "entries": live_call.Entries().render(call.entries),
    }
    return render(request, "ops/live_call.html", context, status=status)


@operations_view("GET", also=(READ_SESSIONS,))
async def live_call_page(request: HttpRequest, user: Any, session_id: str) -> HttpResponse:
    return await _live_page(request, user, session_id)


@operations_view("POST", also=(END_CALL,))
async def end_call(request: HttpRequest, user: Any, session_id: str) -> HttpResponse:
    form = EndCallForm(request.POST)
    try:
        said = await actions.end_call(
            actor=user,
            session_id=session_id,
            reason=request.POST.get("reason", ""),
            ip=client_ip(request),
        )
    except BadRequest as refused:
        form.is_valid()
        if not form.has_error("reason"):
            form.add_error("reason", refused.message)
        return await _refused(request, user, refused, form=form)
    except (NotFound, Conflict) as refused:
        return await _refused(request, user, refused)
    goodbye = "after the model's goodbye" if said else "(no goodbye could be said first)"
    return _done(request, f"The call {session_id} was ended {goodbye}.")


def _back_to(request: HttpRequest) -> str | None:
    """The live view a form came from (its `next`), when it is one of ours."""
    target = request.POST.get("next", "")
    if target.startswith("/ops/sessions/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return None


async def _refused(
    request: HttpRequest, user: Any, refused: ApiError, *, form: EndCallForm | None = None
) -> HttpResponse:
    """The page the form came from again, with why it was refused and its status."""
    target = _back_to(request)
    session_id = target.split("/")[3] if target else ""
    # Only for who may watch it: the live view shows the whole conversation.
    if session_id and await permits(user, *WATCH):
        return await _live_page(
            request, user, session_id, status=refused.status, error=refused.message, form=form
        )
    return await _page(request, user, status=refused.status, error=refused.message)
