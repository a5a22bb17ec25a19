"""What /health checks, as django-health-check plugins: the library's own checks for the
database, Redis, Celery, storage and disk, each adjusted where this service needs more,
and ours for what only this service knows (its circuit breakers, the isolation bash gets
on the workers); the apps register theirs (sessions_app: history waiting in the
journal). ops_app.health runs them."""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import OperationalError
from health_check import HealthCheck
from health_check.checks import Database, Storage
from health_check.contrib.celery import Ping
from health_check.contrib.psutil import Disk
from health_check.contrib.redis import Redis
from health_check.exceptions import ServiceUnavailable, ServiceWarning
from redis.asyncio import Redis as AsyncRedis

from ops_app import breakers
from voiceplatform import dbpool, outage
from voiceplatform.celery import app


@dataclasses.dataclass
class PooledDatabase(Database):
    """SELECT 1. A pool whose every connection is in use answers too: busy, not away."""

    def run(self) -> None:
        try:
            super().run()
        except ServiceUnavailable as exc:
            if isinstance(exc.__cause__, OperationalError) and dbpool.exhausted(exc.__cause__):
                return
            raise


def _redis_client() -> AsyncRedis:
    timeout = settings.REDIS_SOCKET_TIMEOUT_SECONDS
    return AsyncRedis.from_url(
        settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout
    )


@dataclasses.dataclass
class SharedRedis(Redis):
    """PING on a connection of its own (not through the fallbacks), and the fallbacks
    are told what it found: a probe that gets through ends an outage at once."""

    client_factory: object = dataclasses.field(default=_redis_client, repr=False)

    def __repr__(self) -> str:
        return "SharedRedis"

    async def run(self) -> None:
        try:
            await super().run()
        except ServiceUnavailable as exc:
            outage.redis.failed(exc.__cause__ or exc)
            raise
        outage.redis.succeeded()


@dataclasses.dataclass
class Workers(Ping):
    """A worker answers the ping and consumes the tools' queue. Other queues (a
    worker's own, the slow lane) come and go with the workers that own them."""

    def __post_init__(self) -> None:
        self.timeout = datetime.timedelta(seconds=settings.WORKER_PING_TIMEOUT_SECONDS)

    def check_active_queues(self, *active_workers: str) -> None:
        queue = self.app.conf.task_default_queue
        consuming = self.app.control.inspect(list(active_workers)).active_queues() or {}
        if not any(q.get("name") == queue for queues in consuming.values() for q in queues):
            raise ServiceUnavailable(f"no worker consumes the queue '{queue}'")


@dataclasses.dataclass
class Breaker(HealthCheck):
    """A circuit breaker, read where it lives (Redis) every time: open fails the check;
    half-open (due for a trial call) passes. `found` keeps the state it read."""

    name: str = "openai"
    found: str = dataclasses.field(default="", init=False, repr=False)

    async def run(self) -> None:
        self.found = await breakers.astate_of(breakers.by_name(self.name))
        if self.found == "open":
            raise ServiceUnavailable("open")


@dataclasses.dataclass
class WorkerIsolation(HealthCheck):
    """Every worker that answers runs bash isolated; one where bubblewrap does not work
    refuses bash, which the model then hears as a failed tool."""

    def run(self) -> None:
        from tools_app.control import worker_isolations

        found = worker_isolations(settings.WORKER_PING_TIMEOUT_SECONDS)
        weak = sorted(host for host, isolation in found.items() if isolation in ("none", "unknown"))
        if weak:
            raise ServiceWarning(f"bash is refused on {', '.join(weak)}: no bubblewrap there")


def _existing(path: Path) -> Path:
    """path, or its nearest parent that exists (media is made on the first upload)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def configured() -> dict[str, Callable[[], HealthCheck] | None]:
    """How to make each check, by the name /health shows it under (a new instance per
    run); None where this configuration has nothing to check (Redis unset; tasks
    running in-process)."""
    eager = app.conf.task_always_eager
    return {
        "database": PooledDatabase,
        "redis": SharedRedis if settings.REDIS_URL else None,
        "workers": None if eager else Workers,
        "worker_isolation": None if eager else WorkerIsolation,
        "openai_breaker": functools.partial(Breaker, "openai"),
        "amplifier_breaker": functools.partial(Breaker, "amplifier"),
        "storage": Storage,
        "disk": lambda: Disk(
            path=_existing(settings.MEDIA_ROOT),
            max_disk_usage_percent=settings.HEALTH_DISK_MAX_PERCENT,
        ),
        **_registered,
    }


# Checks the apps add of what they own (sessions_app: the journal's backlog), by name.
_registered: dict[str, Callable[[], HealthCheck]] = {}


def register(name: str, make: Callable[[], HealthCheck]) -> None:
    """Adds a check to /health (from an app's ready(): ops_app imports no app above it)."""
    _registered[name] = make
