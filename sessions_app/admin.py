"""Support staff's view of history (read-only): the session list, each session as a
conversation, webhook events; and API keys, for administrators."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db import transaction
from django.db.models import Sum
from django.http import HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join

from ops_app.access import WATCH
from sessions_app import export, history, search
from sessions_app.models import ApiKey, VoiceSession, WebhookEvent
from tools_app import registry
from voiceplatform.admin import (
    AuditedMixin,
    BoundedRelatedFilter,
    PermittedFiltersMixin,
    ReadOnlyMixin,
)


class ToolFilter(admin.SimpleListFilter):
    """Sessions that used one tool: the installed tools, not a scan of every run."""

    title = "tool used"
    parameter_name = "tool"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted(registry.all_tools())]

    def queryset(self, request, queryset):
        return history.with_tool(queryset, self.value()) if self.value() else queryset


class FailedToolCallFilter(admin.SimpleListFilter):
    title = "failed tool call"
    parameter_name = "failed_tool_call"

    def lookups(self, request, model_admin):
        return [("yes", "Has one"), ("no", "Has none")]

    def queryset(self, request, queryset):
        if self.value() not in ("yes", "no"):
            return queryset
        return history.with_failed_tool_call(queryset, self.value() == "yes")


class LevelFilter(admin.SimpleListFilter):
    """The service level a session started at: the four levels, not a scan for them."""

    title = "service level"
    parameter_name = "degradation_level"

    def lookups(self, request, model_admin):
        return [(str(level), str(level)) for level in range(1, 5)]

    def queryset(self, request, queryset):
        if self.value() in {"1", "2", "3", "4"}:
            return queryset.filter(degradation_level=int(self.value()))
        return queryset


@admin.register(VoiceSession)
class VoiceSessionAdmin(AuditedMixin, PermittedFiltersMixin, ReadOnlyMixin, admin.ModelAdmin):
    """The session list support staff work from, and each session as a conversation."""

    list_display = (
        "started",
        "duration",
        "caller",
        "ending",
        "call_outcome",
        "turns",
        "tool_calls",
        "total_tokens",
        "cost",
    )
    list_display_links = ("started",)
    list_filter = (
        "status",
        "source",
        "end_reason",
        "outcome",
        LevelFilter,
        "created_at",
        ("user", BoundedRelatedFilter),
        ("api_key", BoundedRelatedFilter),
        ToolFilter,
        FailedToolCallFilter,
    )
    date_hierarchy = "created_at"
    # Searched by sessions_app.search: words said, the summary and topics, ids, user,
    # key name, address.
    search_fields = ("id",)
    search_help_text = (
        "Words said in the conversation or in its summary and topics, a session or call "
        "id (or its first characters), a user name, an API key's name or a client address."
    )
    list_select_related = ("user", "api_key")
    list_per_page = 50
    # The filtered count is one query; the unfiltered total would be a second.
    show_full_result_count = False
    fields = ("id",)
    change_form_template = "admin/sessions_app/voicesession/conversation.html"
    change_list_template = "admin/sessions_app/voicesession/change_list.html"
    actions = ["export_jsonl", "export_csv"]

    def get_queryset(self, request):
        return history.with_counts(super().get_queryset(request))

    def get_search_results(self, request, queryset, search_term):
        return search.sessions_matching(queryset, search_term), False

    def get_ordering(self, request):
        if request.GET.get("q", "").strip():
            return search.ranked()
        return super().get_ordering(request)

    def get_list_display(self, request):
        if request.GET.get("q", "").strip():
            return (*self.list_display[:3], "match", *self.list_display[3:])
        return self.list_display

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            # Over the whole filtered list, not only this page.
            total = changelist.queryset.order_by().aggregate(cost=Sum("cost_usd"))["cost"]
            response.context_data["total_cost"] = total or Decimal(0)
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        session = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if session is not None:
            context.update(self._conversation(request, session))
        return super().change_view(request, object_id, form_url, context)

    def _conversation(self, request, session: VoiceSession) -> dict:
        entries, resumed_by = history.conversation(session)
        links = {
            "webhooks": reverse("admin:sessions_app_webhookevent_changelist")
            + f"?session__id__exact={session.pk}",
        }
        if request.user.has_perm("ops_app.view_auditevent"):
            links["audit"] = (
                reverse("admin:ops_app_auditevent_changelist")
                + "?"
                + urlencode({"q": f"sessions_app.voicesession:{session.pk}"})
            )
        watch = session.is_live and request.user.has_perms(WATCH)
        return {
            "session": session,
            "live_view": reverse("ops:live-call", args=[session.pk]) if watch else "",
            "caller": history.caller(session),
            "duration": history.clock(session.duration_seconds),
            "audio_quality": history.audio_quality(session.audio_stats),
            "summary_status": history.summary_status(session),
            "timeline": entries,
            "resumed_from": session.resumed_from_id,
            "resumed_by": [later.pk for later in resumed_by],
            "tool_names": [tool.get("name", "?") for tool in session.tools],
            "tool_schemas": json.dumps(session.tools, indent=2, ensure_ascii=False),
            "links": links,
            "files": self.transcript_files(session),
        }

    @admin.display(description="started", ordering="created_at")
    def started(self, obj: VoiceSession) -> str:
        return formats.date_format(timezone.localtime(obj.created_at), "SHORT_DATETIME_FORMAT")

    @admin.display(description="duration", ordering="duration_seconds")
    def duration(self, obj: VoiceSession) -> str:
        return history.clock(obj.duration_seconds) or "—"

    @admin.display(description="caller and source")
    def caller(self, obj: VoiceSession) -> str:
        return format_html(
            '{}<br><small class="quiet">{}</small>', history.caller(obj), obj.get_source_display()
        )

    @admin.display(description="status and end", ordering="status")
    def ending(self, obj: VoiceSession) -> str:
        if not obj.end_reason:
            return obj.get_status_display()
        return format_html(
            '{}<br><small class="quiet">{}</small>',
            obj.get_status_display(),
            obj.get_end_reason_display(),
        )

    @admin.display(description="outcome", ordering="outcome")
    def call_outcome(self, obj: VoiceSession) -> str:
        """What the call came to (its summary's outcome), or where its summary stands."""
        if obj.outcome:
            return format_html(
                '<span class="outcome-{}">{}</span>', obj.outcome, obj.get_outcome_display()
            )
        if obj.summary_state:
            return format_html(
                '<small class="quiet">summary {}</small>', obj.get_summary_state_display().lower()
            )
        return "—"

    @admin.display(description="turns", ordering="turns")
    def turns(self, obj: VoiceSession) -> int:
        return obj.turns

    @admin.display(description="tool calls", ordering="tool_calls")
    def tool_calls(self, obj: VoiceSession) -> str:
        if obj.failed_tool_calls:
            return format_html(
                '{} <span class="failed" title="failed tool calls">({} failed)</span>',
                obj.tool_calls,
                obj.failed_tool_calls,
            )
        return str(obj.tool_calls)

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: VoiceSession) -> str:
        return f"{obj.cost_usd:.4f}"

    @admin.display(description="best match")
    def match(self, obj: VoiceSession) -> str:
        return search.highlighted(obj) or "—"

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

    # Revoking changes the keys: only for staff who may change them, not those who view.
    @admin.action(description="Revoke the selected keys", permissions=["change"])
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
