"""Start-up warnings about production settings that are missing.

What would make production unsafe (a guessable SECRET_KEY, the simulator mounted) is
refused outright by the settings; these are the gaps a deployment can start with.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Warning, register


@register(deploy=True)
def production_settings(app_configs, **kwargs) -> list[Warning]:
    problems = []
    if not settings.OPENAI_API_KEY:
        problems.append(
            Warning(
                "OPENAI_API_KEY is not set: no session reaches OpenAI.",
                id="ops_app.W002",
                hint="Set OPENAI_API_KEY (or OPENAI_API_KEY_FILE).",
            )
        )
    if settings.OPENAI_API_KEY and not settings.OPENAI_WEBHOOK_SECRETS:
        problems.append(
            Warning(
                "OPENAI_WEBHOOK_SECRET is not set: every webhook will be refused.",
                id="ops_app.W003",
                hint="Set OPENAI_WEBHOOK_SECRET (whsec_...) or OPENAI_WEBHOOK_SECRET_FILE.",
            )
        )
    if not settings.REDIS_URL:
        problems.append(
            Warning(
                "REDIS_URL is not set: cache, channel layer and Celery stay in-process.",
                id="ops_app.W004",
                hint="Set REDIS_URL (or REDIS_URL_FILE).",
            )
        )
    if settings.PRODUCTION and not settings.METRICS_BEARER_TOKEN:
        problems.append(
            Warning(
                "METRICS_BEARER_TOKEN is not set: anyone who reaches /metrics reads it.",
                id="ops_app.W006",
                hint=(
                    "Set METRICS_BEARER_TOKEN (or _FILE) and give Prometheus the same "
                    "bearer token; metrics stay internal (seed 2.3)."
                ),
            )
        )
    if not settings.USE_X_FORWARDED_FOR:
        problems.append(
            Warning(
                "USE_X_FORWARDED_FOR is off: behind a load balancer every client shares one "
                "address, so per-address limits would count them all together.",
                id="ops_app.W005",
                hint=(
                    "Behind a proxy, set USE_X_FORWARDED_FOR=1 and TRUSTED_PROXY_COUNT to the "
                    "number of proxies that append to X-Forwarded-For. Serving clients "
                    "directly? Add ops_app.W005 to SILENCED_SYSTEM_CHECKS."
                ),
            )
        )
    return problems
