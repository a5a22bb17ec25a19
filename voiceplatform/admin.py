"""Admin pieces the apps share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ValidationError
from django.db import models

from ops_app import audit
from ops_app.models import AuditEvent
from voiceplatform.api import client_ip


class ReadOnlyMixin:
    """History is a record: it is browsed, never edited."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class BoundedRelatedFilter(admin.RelatedFieldListFilter):
    """A related filter that lists at most LIMIT choices (and the chosen one): with
    thousands of users the side bar stays short; search finds the others by name."""

    LIMIT = 50

    def field_choices(self, field, request, model_admin):
        model = field.related_model
        ordering = self.field_admin_ordering(field, request, model_admin) or [model._meta.pk.name]
        rows = model._default_manager.order_by(*ordering)
        choices = [(row.pk, str(row)) for row in rows[: self.LIMIT]]
        chosen = self.lookup_val[0] if self.lookup_val else None
        if chosen and all(str(pk) != chosen for pk, _ in choices):
            # Not isdigit(): it passes "²", which no id is (the admin then says the
            # filter is wrong, rather than failing here).
            try:
                chosen_pk = model._meta.pk.to_python(chosen)
            except ValidationError:
                chosen_pk = None
            row = rows.filter(pk=chosen_pk).first() if chosen_pk is not None else None
            if row is not None:
                choices.append((row.pk, str(row)))
        return choices


class PermittedFiltersMixin:
    """Offers a filter on a related model (a user, an API key) only to viewers who may
    view that model: the filter lists that model's rows, not only those the list shows,
    so support staff who read sessions would see every account and API key. A filter
    left out still applies when its parameter is in the address; it lists nothing."""

    def get_list_filter(self, request) -> list:
        kept = []
        for entry in super().get_list_filter(request):
            path = entry[0] if isinstance(entry, tuple | list) else entry
            if isinstance(path, str):
                field = get_fields_from_path(self.model, path)[-1]
                if field.is_relation and not _may_view(request, field.related_model):
                    continue
            kept.append(entry)
        return kept


def _may_view(request, model: type[models.Model]) -> bool:
    opts = model._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('view', opts)}")


class AuditedMixin:
    """Every add, change and delete made in the admin also leaves an AuditEvent (the
    admin's own history is editable by anyone who can delete log entries; the audit log
    is not). Every ModelAdmin of the project uses it (tests/ops_app checks)."""

    def log_addition(self, request, obj: models.Model, message: Any) -> LogEntry:
        entry = super().log_addition(request, obj, message)
        _record(request, AuditEvent.Action.ADMIN_ADD, obj, entry, message)
        return entry

    def log_change(self, request, obj: models.Model, message: Any) -> LogEntry:
        entry = super().log_change(request, obj, message)
        _record(request, AuditEvent.Action.ADMIN_CHANGE, obj, entry, message)
        return entry

    def log_deletions(self, request, queryset: Iterable[models.Model]) -> list[LogEntry]:
        # Called before the rows go, inside the delete's transaction: a delete that fails
        # leaves no event.
        objects = list(queryset)
        entries = super().log_deletions(request, objects)
        for obj, entry in zip(objects, entries, strict=True):
            _record(request, AuditEvent.Action.ADMIN_DELETE, obj, entry, "")
        return entries

    def log_changes(self, request, objects: Iterable[models.Model], message: str) -> None:
        """For bulk actions that change rows without saving each one (queryset.update):
        one admin history entry and one audit event per object."""
        for obj in objects:
            self.log_change(request, obj, message)


def _record(
    request, action: AuditEvent.Action, obj: models.Model, entry: LogEntry, message: Any
) -> None:
    # The admin's message: a list of what was added or which fields changed (never their
    # values, so no password), or the words a bulk action gave.
    details: dict[str, Any] = {"message": entry.get_change_message()} if message else {}
    if isinstance(message, list):
        details["change"] = message
    audit.record(
        action,
        actor=request.user,
        target=audit.describe(obj),
        ip=client_ip(request),
        details=details,
    )
