"""The checklist pages under /ops/checklists/: thin views over ops_app.checklists.

Looking needs staff with ops_app.view_operations, acting (start, tick, re-check,
complete) also ops_app.operate (ops_app.access); anonymous callers are sent to log in.
Plain forms, no scripts."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from itertools import groupby

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from ops_app import checklists
from ops_app.access import OPERATE, VIEW, permits
from ops_app.models import ChecklistEntry, ChecklistRun, ChecklistTemplate
from voiceplatform.api import client_ip
from voiceplatform.errors import Conflict

RUNS_LISTED = 100

View = Callable[..., Awaitable[HttpResponse]]


def permission(needed: str) -> Callable[[View], View]:
    """Anonymous: to the login page and back. Logged in without the permission (or no
    longer staff): 403."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            user = await request.auser()
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("admin:login"))
            # Resolved once here, so templates never load it synchronously.
            request.user = user
            if not await permits(user, needed):
                return render(request, "ops/checklists/forbidden.html", status=403)
            request.can_operate = await permits(user, OPERATE)
            return await view(request, *args, **kwargs)

        return guarded

    return decorate


@require_GET
@permission(VIEW)
async def index(request: HttpRequest) -> HttpResponse:
    templates = [
        template async for template in ChecklistTemplate.objects.with_counts().order_by("order")
    ]
    runs = [
        run
        async for run in ChecklistRun.objects.with_progress().select_related(
            "template", "started_by", "completed_by"
        )[:RUNS_LISTED]
    ]
    return render(
        request,
        "ops/checklists/index.html",
        {
            "templates": templates,
            "open_runs": [run for run in runs if not run.is_completed],
            "completed_runs": [run for run in runs if run.is_completed],
            "can_operate": request.can_operate,
        },
    )


@require_POST
@permission(OPERATE)
async def start(request: HttpRequest, slug: str) -> HttpResponse:
    template = await _get(ChecklistTemplate.objects.filter(slug=slug))
    run = await checklists.start_run(template, actor=request.user, ip=client_ip(request))
    return redirect("checklists:run", run_id=run.pk)


@require_GET
@permission(VIEW)
async def run_page(request: HttpRequest, run_id: int) -> HttpResponse:
    run = await _get(
        ChecklistRun.objects.with_progress()
        .select_related("template", "started_by", "completed_by")
        .filter(pk=run_id)
    )
    entries = [
        entry
        async for entry in ChecklistEntry.objects.filter(run=run).select_related("item", "done_by")
    ]
    groups = [(group, list(items)) for group, items in groupby(entries, lambda e: e.item.group)]
    return render(
        request,
        "ops/checklists/run.html",
        {
            "run": run,
            "groups": groups,
            "has_checks": any(entry.is_verifiable for entry in entries),
            "can_operate": request.can_operate and not run.is_completed,
        },
    )


@require_POST
@permission(OPERATE)
async def tick(request: HttpRequest, run_id: int, entry_id: int) -> HttpResponse:
    entry = await _get(ChecklistEntry.objects.filter(pk=entry_id, run_id=run_id))
    try:
        await checklists.tick(
            entry,
            actor=request.user,
            done=request.POST.get("done") == "on",
            note=request.POST.get("note", ""),
            ip=client_ip(request),
        )
    except Conflict as refused:
        messages.error(request, refused.message)
    return redirect(f"{reverse('checklists:run', args=[run_id])}#entry-{entry_id}")


@require_POST
@permission(OPERATE)
async def recheck(request: HttpRequest, run_id: int) -> HttpResponse:
    run = await _get(ChecklistRun.objects.filter(pk=run_id))
    try:
        results = await checklists.reverify(run, actor=request.user, ip=client_ip(request))
    except Conflict as refused:
        messages.error(request, refused.message)
    else:
        failed = sorted(name for name, passed in results.items() if not passed)
        messages.info(
            request,
            f"Re-checked: {len(results) - len(failed)} of {len(results)} automatic checks pass"
            + (f" ({', '.join(failed)} failing)." if failed else "."),
        )
    return redirect("checklists:run", run_id=run_id)


@require_POST
@permission(OPERATE)
async def complete(request: HttpRequest, run_id: int) -> HttpResponse:
    run = await _get(ChecklistRun.objects.filter(pk=run_id))
    try:
        await checklists.complete(
            run, actor=request.user, note=request.POST.get("note", ""), ip=client_ip(request)
        )
    except Conflict as refused:
        messages.error(request, refused.message)
    return redirect("checklists:run", run_id=run_id)


async def _get(queryset):
    found = await queryset.afirst()
    if found is None:
        raise Http404("No such checklist or run.")
    return found
