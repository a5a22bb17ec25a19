"""Tool runs and background tasks for support staff: read-only, by tool and status (the
session page shows them in place in its conversation: sessions_app.history); and, from
the runs' list, the agents delegate can run, with the bundles that were refused and
why."""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from tools_app import registry
from tools_app.agents import bundles
from tools_app.models import Task, ToolExecution, ToolGrant, shown_arguments
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
    # The arguments are shown cut to a bound, read cut from the database, and the list
    # loads no output: a page stays small whatever the calls sent.
    exclude = ("arguments",)
    readonly_fields = ("arguments_shown",)

    def get_queryset(self, request):
        return super().get_queryset(request).with_arguments_shown().defer("output", "error")

    @admin.display(description="arguments")
    def arguments_shown(self, obj: ToolExecution) -> str:
        shown = shown_arguments(obj.arguments_head, obj.arguments_chars)
        return shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False)

    def get_urls(self):
        agents = path(
            "agents/", self.admin_site.admin_view(self.agents_view), name="tools_app_agents"
        )
        return [agents, *super().get_urls()]

    def agents_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        catalog = bundles.catalog(registry.modules_for_agents())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Agents",
            "directory": settings.AGENTS_DIR,
            "agents": [catalog.agents[name] for name in catalog.names()],
            "refused": sorted(catalog.refused.items()),
        }
        return TemplateResponse(request, "admin/tools_app/toolexecution/agents.html", context)


@admin.register(Task)
class TaskAdmin(AuditedMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "session",
        "what",
        "status",
        "created_at",
        "duration",
        "cancelled_by",
    )
    list_filter = ("status", "kind", "created_at")
    search_fields = ("id", "session__id")
    list_select_related = ("session",)
    list_per_page = 50
    show_full_result_count = False
    # The list loads no result or progress; a task's page shows them (its output is a
    # tool's, capped at TOOL_OUTPUT_MAX_BYTES), and its steps are on the session's page.
    readonly_fields = ("what", "duration")

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            return queryset.defer("output", "error", "progress")
        return queryset

    @admin.display(description="tool / agent", ordering="tool")
    def what(self, obj: Task) -> str:
        return f"agent {obj.agent}" if obj.agent else f"tool {obj.tool}"

    @admin.display(description="duration")
    def duration(self, obj: Task) -> str:
        if obj.finished_at is None:
            return "running"
        return f"{(obj.finished_at - obj.created_at).total_seconds():.1f} s"


class ToolGrantForm(forms.ModelForm):
    class Meta:
        model = ToolGrant
        fields = ("user", "api_key", "tools")

    def clean_tools(self):
        tools = self.cleaned_data["tools"]
        if isinstance(tools, list):
            unknown = sorted(set(map(str, tools)) - set(registry.all_tools()) - {"*"})
            if unknown:
                raise ValidationError(f"Unknown tools: {', '.join(unknown)}.")
        return tools


@admin.register(ToolGrant)
class ToolGrantAdmin(AuditedMixin, admin.ModelAdmin):
    form = ToolGrantForm
    list_display = ("__str__", "user", "api_key", "updated_at")
    search_fields = ("user__username", "api_key__name")
    autocomplete_fields = ("user",)
