"""Which tools a caller's session may use: server policy, never the browser's choice.

The settings give a default per kind of caller; a ToolGrant for a user or an API key
(made in the admin) replaces it for that caller.
"""

from __future__ import annotations

from django.conf import settings

from tools_app import registry
from tools_app.models import ToolGrant


def _resolve(configured: list[str]) -> list[str]:
    known = registry.all_tools()
    if "*" in configured:
        return sorted(known)
    return [name for name in configured if name in known]


def default_names(caller_kind: str) -> list[str]:
    """Tool names for 'anonymous', 'user' or 'api_key' callers ('*' means all)."""
    return _resolve(
        {
            "anonymous": settings.TOOLS_FOR_ANONYMOUS,
            "user": settings.TOOLS_FOR_USERS,
            "api_key": settings.TOOLS_FOR_API_KEYS,
        }.get(caller_kind, [])
    )


async def allowed_names(caller) -> list[str]:
    """The tools for a sessions_app.callers.Caller."""
    grant = None
    if caller.api_key_id:
        grant = await ToolGrant.objects.filter(api_key_id=caller.api_key_id).afirst()
    elif caller.user_id:
        grant = await ToolGrant.objects.filter(user_id=caller.user_id).afirst()
    return _resolve(grant.tools) if grant else default_names(caller.kind)


def definitions(names: list[str]) -> list[dict]:
    return [registry.get(name).function_definition() for name in names if registry.get(name)]
