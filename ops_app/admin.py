"""The audit log for support staff and operators (read-only, filterable, exportable as
CSV), the operators' switches (read-only: /ops/ and manage.py maintenance change them),
and the admins of Django's users and groups and of axes' lockouts, audited like ours."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone

from ops_app import audit
from ops_app.models import AuditEvent, OpsState
from voiceplatform.admin import (
    AuditedMixin,
    BoundedRelatedFilter,
    PermittedFiltersMixin,
    ReadOnlyMixin,
)
from voiceplatform.api import client_ip
from voiceplatform.spreadsheet import cell, row_writer

CSV_COLUMNS = (
    "created_at",
    "actor",
    "actor_id",
    "action",
    "target",
    "ip",
    "request_id",
    "details",
)


@admin.register(AuditEvent)
class AuditEventAdmin(AuditedMixin, PermittedFiltersMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "actor_name", "action", "target", "ip", "request_id")
    list_filter = ("action", "created_at", ("actor", BoundedRelatedFilter))
    search_fields = ("actor_name", "target", "request_id", "ip")
    search_help_text = "Who (username), target, request id or IP address."
    date_hierarchy = "created_at"
    list_per_page = 100
    # Searching text and counting every match of a large table is slow; the date
    # hierarchy and filters narrow it first.
    show_full_result_count = False
    actions = ["export_csv"]

    def get_urls(self):
        export = path(
            "export.csv",
            self.admin_site.admin_view(self.export_view),
            name="ops_app_auditevent_export",
        )
        return [export, *super().get_urls()]

    @admin.action(description="Export the selected events as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        if request.POST.get("select_across") == "1":
            chosen = {"filters": request.GET.urlencode()}
        else:  # one page's selection: at most the admin's list_max_show_all ids
            chosen = {"ids": list(queryset.values_list("pk", flat=True))}
        return csv_response(request, queryset, chosen)

    def export_view(self, request: HttpRequest) -> StreamingHttpResponse | HttpResponseRedirect:
        """Every event the list shows with its current filters, search and dates."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            messages.error(request, "Those filters are not valid.")
            return HttpResponseRedirect(reverse("admin:ops_app_auditevent_changelist"))
        return csv_response(request, changelist.queryset, {"filters": request.GET.urlencode()})


@admin.register(OpsState)
class OpsStateAdmin(AuditedMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("__str__", "maintenance_since", "forced_level", "forced_until", "updated_at")


# Django's own user and group admins, with their changes audited too.
User = get_user_model()
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class AuditedUserAdmin(AuditedMixin, UserAdmin):
    pass


@admin.register(Group)
class AuditedGroupAdmin(AuditedMixin, GroupAdmin):
    pass


@admin.register(AccessAttempt)
class LoginFailuresAdmin(AuditedMixin, AccessAttemptAdmin):
    """Failed logins per username and address (axes): deleting a row lifts its lockout,
    and is audited like any other delete."""


def csv_response(request: HttpRequest, queryset: QuerySet, chosen: dict) -> StreamingHttpResponse:
    """The events as a CSV download, oldest first, written row by row as the database
    hands them over (an async iterator: under ASGI, Django reads a plain one whole into
    memory before sending a byte). The audit log keeps who took which (chosen: the
    filters or the ids), and how many."""
    count = queryset.count()
    audit.record(
        AuditEvent.Action.EXPORT,
        actor=request.user,
        target=f"{AuditEvent._meta.label_lower} ({count} events)",
        ip=client_ip(request),
        details={"format": "csv", "events": count, **chosen},
    )
    response = StreamingHttpResponse(_csv_lines(queryset), content_type="text/csv")
    filename = f"audit-{timezone.now():%Y%m%d-%H%M%S}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


async def _csv_lines(queryset: QuerySet) -> AsyncIterator[str]:
    writer = row_writer()
    yield writer.writerow(CSV_COLUMNS)
    async for event in queryset.order_by("created_at", "id").aiterator(chunk_size=1000):
        yield writer.writerow(
            [
                event.created_at.isoformat(),
                cell(event.actor_name),
                event.actor_id or "",
                event.action,
                cell(event.target),
                event.ip or "",
                cell(event.request_id),
                cell(json.dumps(event.details, ensure_ascii=False, sort_keys=True)),
            ]
        )
