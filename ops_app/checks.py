"""Start-up warnings about production settings that are missing or unsafe."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Warning, register


@register(deploy=True)
def production_settings(app_configs, **kwargs) -> list[Warning]:
    problems = []
    if settings.SECRET_KEY.startswith("dev-only-"):
        problems.append(
            Warning(
                "SECRET_KEY is the development default.",
                id="ops_app.W001",
                hint="Set SECRET_KEY to a long random value.",
            )
        )
    if not settings.OPENAI_API_KEY:
        problems.append(
            Warning(
                "OPENAI_API_KEY is not set: the simulator answers instead of OpenAI.",
                id="ops_app.W002",
                hint="Set OPENAI_API_KEY.",
            )
        )
    if settings.OPENAI_API_KEY and not settings.OPENAI_WEBHOOK_SECRETS:
        problems.append(
            Warning(
                "OPENAI_WEBHOOK_SECRET is not set: every webhook will be refused.",
                id="ops_app.W003",
                hint="Set OPENAI_WEBHOOK_SECRET (whsec_...).",
            )
        )
    if not settings.REDIS_URL:
        problems.append(
            Warning(
                "REDIS_URL is not set: cache, channel layer and Celery stay in-process.",
                id="ops_app.W004",
                hint="Set REDIS_URL.",
            )
        )
    return problems
