"""Which tools a caller's session may use: server policy, never the browser's choice."""

from __future__ import annotations

from django.conf import settings

from tools_app import registry


def allowed_names(caller_kind: str) -> list[str]:
    """Tool names for 'anonymous', 'user' or 'api_key' callers ('*' means all)."""
    configured = {
        "anonymous": settings.TOOLS_FOR_ANONYMOUS,
        "user": settings.TOOLS_FOR_USERS,
        "api_key": settings.TOOLS_FOR_API_KEYS,
    }.get(caller_kind, [])
    known = registry.all_tools()
    if "*" in configured:
        return sorted(known)
    return [name for name in configured if name in known]


def definitions(names: list[str]) -> list[dict]:
    return [registry.get(name).function_definition() for name in names if registry.get(name)]
