"""Admin pieces the apps share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.admin.models import LogEntry
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
