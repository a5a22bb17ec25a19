"""Start-up warnings about agent bundles that were refused (AGENTS_DIR): each names
its file and why, so an author sees it in `manage.py check` rather than when a
session first delegates to it."""

from __future__ import annotations

from django.core.checks import Warning, register

from tools_app import registry
from tools_app.agents import bundles


@register()
def agent_bundles(app_configs, **kwargs) -> list[Warning]:
    catalog = bundles.catalog(registry.modules_for_agents())
    return [
        Warning(
            f"Agent bundle {name} was refused: {reason}",
            id="tools_app.W001",
            hint="Fix the bundle in AGENTS_DIR; the other agents are unaffected.",
        )
        for name, reason in sorted(catalog.refused.items())
    ]
