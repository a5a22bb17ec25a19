"""Heartbeat files: how a Celery worker and beat show their container health check that
their loops still turn. They serve no HTTP, and a check that asked them over the broker
would restart every worker whenever Redis blinks; a file the loop itself touches goes
stale only when that process is stuck or gone."""

from __future__ import annotations

import time
from pathlib import Path

from celery import bootsteps
from celery.beat import PersistentScheduler
from django.conf import settings


def heartbeat_path(process: str) -> Path:
    return Path(settings.HEARTBEAT_DIR) / process


def touch(process: str) -> None:
    path = heartbeat_path(process)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def age(process: str) -> float | None:
    """Seconds since process last touched its heartbeat; None when it never did."""
    try:
        return time.time() - heartbeat_path(process).stat().st_mtime
    except FileNotFoundError:
        return None


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Touches the worker's heartbeat from the worker's own timer, which the consumer's
    event loop drives: a blocked loop stops touching it."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.timer_entry = None

    def start(self, worker) -> None:
        touch("worker")
        self.timer_entry = worker.timer.call_repeatedly(
            settings.HEARTBEAT_INTERVAL_SECONDS, touch, ("worker",), priority=10
        )

    def stop(self, worker) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
        heartbeat_path("worker").unlink(missing_ok=True)


class HeartbeatScheduler(PersistentScheduler):
    """Beat's scheduler, touching beat's heartbeat on every tick (at least every
    CELERY_BEAT_MAX_LOOP_INTERVAL seconds)."""

    def tick(self, *args, **kwargs):
        touch("beat")
        return super().tick(*args, **kwargs)
