"""Admin pieces the apps share."""

from __future__ import annotations


class ReadOnlyMixin:
    """History is a record: it is browsed, never edited."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
