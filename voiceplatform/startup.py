"""The one line at start that says which backends are in use."""

from __future__ import annotations

import structlog
from django.conf import settings

from tools_app.sandbox import describe_limits, isolation
from voiceplatform import tracing

log = structlog.get_logger("voiceplatform.startup")


def describe_backends() -> dict[str, str]:
    database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    storage = settings.STORAGES["default"]["BACKEND"].rsplit(".", 1)[-1]
    return {
        "database": database,
        "cache": "redis" if settings.REDIS_URL else "locmem",
        "channel_layer": "redis" if settings.REDIS_URL else "in-memory",
        "celery": "in-process" if settings.CELERY_TASK_ALWAYS_EAGER else "redis",
        "periodic": "in-process" if settings.PERIODIC_IN_PROCESS else "celery beat",
        "storage": storage,
        "upstream": "simulator" if not settings.OPENAI_API_KEY else "openai",
        "upstream_url": settings.OPENAI_BASE_URL,
        "pod": settings.POD_NAME,
        "tool_isolation": isolation(),
        "tool_limits": describe_limits(),
        "traces": tracing.describe(),
    }


def log_backends() -> None:
    log.info("backends", **describe_backends())
