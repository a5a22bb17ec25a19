"""Tool runs for support staff: read-only, by tool and status (the session page shows
them in place in its conversation: sessions_app.history)."""

from __future__ import annotations

from django.contrib import admin

from tools_app.models import ToolExecution, ToolGrant
from voiceplatform.admin import AuditedMixin, ReadOnlyMixin


@admin.register(ToolExecution)
class ToolExecutionAdmin(AuditedMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "call_id",
        "tool",
        "status",
        "session",
        "origin",
        "created_at",
        "duration_seconds",
        "worker",
    )
    list_filter = ("tool", "status", "origin", "created_at")
    search_fields = ("call_id", "session__id")
    list_select_related = ("session",)


@admin.register(ToolGrant)
class ToolGrantAdmin(AuditedMixin, admin.ModelAdmin):
    list_display = ("__str__", "user", "api_key", "updated_at")
    search_fields = ("user__username", "api_key__name")
    autocomplete_fields = ("user",)
