"""Deployment checklists in the admin, read-only: the four checklists as loaded, and
every run (completed ones are kept) with its entries."""

from __future__ import annotations

from django.contrib import admin

from ops_app.models import ChecklistEntry, ChecklistItem, ChecklistRun, ChecklistTemplate
from voiceplatform.admin import AuditedMixin, ReadOnlyMixin


class ChecklistItemInline(ReadOnlyMixin, admin.TabularInline):
    model = ChecklistItem
    fields = ("order", "group", "text", "verifier")
    readonly_fields = fields
    extra = 0


@admin.register(ChecklistTemplate)
class ChecklistTemplateAdmin(AuditedMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("section", "title", "slug", "item_count", "verifiable_count")
    inlines = [ChecklistItemInline]

    def get_queryset(self, request):
        return super().get_queryset(request).with_counts()

    @admin.display(description="items")
    def item_count(self, obj: ChecklistTemplate) -> int:
        return obj.item_count

    @admin.display(description="checked by the app")
    def verifiable_count(self, obj: ChecklistTemplate) -> int:
        return obj.verifiable_count


class ChecklistEntryInline(ReadOnlyMixin, admin.TabularInline):
    model = ChecklistEntry
    fields = (
        "item",
        "done",
        "done_by",
        "done_at",
        "note",
        "verified_status",
        "verified_detail",
        "verified_at",
    )
    readonly_fields = fields
    ordering = ("item__order", "id")
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("item", "done_by")


@admin.register(ChecklistRun)
class ChecklistRunAdmin(AuditedMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "__str__",
        "started_by",
        "started_at",
        "progress",
        "failed_checks",
        "completed_by",
        "completed_at",
    )
    list_filter = ("template", ("completed_at", admin.EmptyFieldListFilter), "started_at")
    date_hierarchy = "started_at"
    list_select_related = ("template", "started_by", "completed_by")
    fields = (
        "template",
        "started_by",
        "started_at",
        "verified_at",
        "completed_by",
        "completed_at",
        "note",
    )
    readonly_fields = fields
    inlines = [ChecklistEntryInline]

    def get_queryset(self, request):
        return super().get_queryset(request).with_progress()

    @admin.display(description="done")
    def progress(self, obj: ChecklistRun) -> str:
        return f"{obj.done_count} / {obj.entry_count}"

    @admin.display(description="checks failing")
    def failed_checks(self, obj: ChecklistRun) -> int:
        return obj.failed_count
