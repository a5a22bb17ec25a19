"""Support staff's view of history: sessions with their ordered transcript, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.db import transaction
from django.http import HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join

from sessions_app import export
from sessions_app.models import ApiKey, ConversationItem, VoiceSession, WebhookEvent
from tools_app.admin import ToolExecutionInline
from voiceplatform.admin import AuditedMixin, ReadOnlyMixin


class ConversationItemInline(ReadOnlyMixin, admin.TabularInline):
    model = ConversationItem
    fields = ("created_at", "role", "kind", "status", "text", "name", "arguments", "source")
    readonly_fields = fields
    ordering = ("created_at", "id")
    extra = 0
    show_change_link = False


@admin.register(VoiceSession)
class VoiceSessionAdmin(AuditedMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "source",
        "model",
        "created_at",
        "duration_seconds",
        "total_tokens",
        "caller",
    )
    list_filter = ("status", "source", "model", "created_at", "degradation_level")
    date_hierarchy = "created_at"
    search_fields = ("id", "call_id", "items__text", "client_ip")
    inlines = [ConversationItemInline, ToolExecutionInline]
    readonly_fields = ("transcript_files",)
    exclude = ("transcript_json", "transcript_text", "recording")
    list_select_related = ("user", "api_key")
    actions = ["export_jsonl", "export_csv"]

    def get_search_results(self, request, queryset, search_term):
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), False

    @admin.display(description="caller")
    def caller(self, obj: VoiceSession) -> str:
        return f"{obj.attribution} {obj.client_ip or ''}".strip()

    @admin.display(description="transcript and recording")
    def transcript_files(self, obj: VoiceSession) -> str:
        links = []
        if obj.transcript_json:
            links.append(format_html('<a href="{}">transcript (JSON)</a>', obj.transcript_json.url))
            links.append(format_html('<a href="{}">transcript (text)</a>', obj.transcript_text.url))
        if obj.recording:
            links.append(format_html('<a href="{}">recording</a>', obj.recording.url))
        return (
            format_html_join(" · ", "{}", ((link,) for link in links))
            or "— (written when the session ends)"
        )

    # "view": the admin is read-only, and support staff who may read sessions export them.
    @admin.action(description="Export selected as JSON Lines", permissions=["view"])
    def export_jsonl(self, request, queryset) -> StreamingHttpResponse:
        return export.download(request, queryset, "jsonl")

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(self, request, queryset) -> StreamingHttpResponse:
        return export.download(request, queryset, "csv")


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedMixin, admin.ModelAdmin):
    list_display = ("name", "user", "lookup", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "lookup")
    fields = ("name", "user", "revoked_at")
    actions = ["revoke"]

    def save_model(self, request, obj: ApiKey, form, change) -> None:
        if not change:
            obj.raw = obj.issue()
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj: ApiKey, post_url_continue=None) -> HttpResponse:
        """Shows the new key once, on this page: a message would carry it in the
        messages cookie, which is signed but readable."""
        context = {
            **self.admin_site.each_context(request),
            "title": "API key added",
            "opts": self.opts,
            "original": obj,
            "raw_key": obj.raw,
        }
        response = TemplateResponse(request, "admin/sessions_app/apikey/issued.html", context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset) -> None:
        now = timezone.now()
        with transaction.atomic():
            ids = list(queryset.filter(revoked_at__isnull=True).values_list("pk", flat=True))
            ApiKey.objects.filter(pk__in=ids, revoked_at__isnull=True).update(revoked_at=now)
            # Only those this action revoked (not one a concurrent request got to first).
            revoked = list(ApiKey.objects.filter(pk__in=ids, revoked_at=now))
            self.log_changes(request, revoked, "Revoked with the bulk action.")
        self.message_user(request, f"Revoked {len(revoked)} key(s).")


@admin.register(WebhookEvent)
class WebhookEventAdmin(AuditedMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("webhook_id", "event_type", "outcome", "session", "created_at")
    list_filter = ("event_type", "created_at")
    search_fields = ("webhook_id", "session__id")
